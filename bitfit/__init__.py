"""bitfit: BitFit (bias-only) fine-tuning of BERT-family encoders, searched and compared with full
fine-tuning. This package is the plain library; ``flows/`` orchestrates it."""

from __future__ import annotations

__version__ = "0.1.0"
