"""The paper's claims checked on the model a user has: ``bitfit reproduce``.

Ben-Zaken, Ravfogel and Goldberg (ACL 2022) claim that (1) with small-to-medium training data
BitFit is competitive with full fine-tuning, (2) with larger data it is competitive with other
sparse fine-tuning methods, (3) a small subset of the biases (query and first MLP layer, ``qm2``)
keeps most of the gain, and (4) fine-tuning mostly exposes what the pre-trained model knows. This
module measures each of them:

- **main table**: tasks x methods (``full``, ``bitfit``, ``bitfit_qm2``, ``rand``, ``frozen``,
  ``lora``) x seeds. Each method's learning rate comes from a small grid study on a split carved
  from train (``bitfit.study``), then each seed trains on the training split and is scored on dev
  (``bitfit.compare``, no selection on dev);
- **data-size curve**: one task at log-spaced training sizes, BitFit, full fine-tuning and LoRA;
- **which biases move**: the change of every bias term per layer, from the BitFit artifacts;
- **claims**: each claim per task with its test (Welch's, one-sided) and a verdict.

Every run is in MLflow under one parent run, which holds the report (Markdown and plots). A cell
(one task and method, or one size and method) is written to the run home when it finishes, so an
interrupted run resumes where it stopped, and studies resume in their storage.

    from bitfit import reproduce
    summary = reproduce.run(reproduce.ReproduceConfig(budget="small"))

Its names load their module on first use (PEP 562), so ``bitfit reproduce --help`` reads the
budgets without torch.
"""

from __future__ import annotations

from bitfit.lazy import lazy_names

# each module (of this package, or another named whole) -> the public names it defines
__all__, __getattr__, __dir__ = lazy_names(__name__, {
    "config": ("ALPHA BUDGETS Budget CURVE_METHODS EXPERIMENT METHODS MOST Recipe "
               "ReproduceConfig TASKS check default_name"),
    "stats": ("Analysis CLAIMS bias_movement claims crossing main_table majority_score "
              "movement_matrix pareto ranking rules term_ablation term_drops"),
    "cells": "Cell",
    "bitfit.pipeline": "Report",
    "runner": "curve_sizes finish run study_space",
    "report": "markdown model_description print_summary write_files",
})
