"""Shared fixtures: the real bundled MiniLM, the real GLUE files in ../shared/data/glue (sliced
small), and tiny models built from configs where structure, not knowledge, is tested."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
# the tests' spaces: one epoch of a small sample (the shipped spaces train far longer)
TINY = str(ROOT / "tests" / "spaces" / "tiny.yaml")
TINY_FULL = str(ROOT / "tests" / "spaces" / "tiny_full.yaml")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    assert (GLUE_DIR / "CoLA" / "train.tsv").is_file(), f"GLUE data expected at {GLUE_DIR}"
    return GLUE_DIR


@pytest.fixture(scope="session")
def base():
    """The bundled all-MiniLM-L6-v2, loaded once; every train() restores it first."""
    from transformers.utils import logging as hf_logging

    from bitfit.models import load_base

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return load_base()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _prepare(base, glue_dir, cache_dir, task: str, train: int, dev: int):
    from bitfit.data import prepare
    from bitfit.tasks import load_task

    return prepare(load_task(task), base.tokenizer, data_dir=glue_dir, max_length=64,
                   max_train_samples=train, max_eval_samples=dev, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def cola_small(base, glue_dir, cache_dir):
    return _prepare(base, glue_dir, cache_dir, "cola", 160, 96)


@pytest.fixture(scope="session")
def sst2_small(base, glue_dir, cache_dir):
    return _prepare(base, glue_dir, cache_dir, "sst2", 800, 300)


@pytest.fixture(scope="session")
def stsb_small(base, glue_dir, cache_dir):
    return _prepare(base, glue_dir, cache_dir, "stsb", 800, 300)


def tiny_config(family: str, layers: int = 2):
    """A small config of each supported family (2 layers, hidden 32)."""
    from transformers import (BertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig,
                              RobertaConfig)

    common = dict(num_hidden_layers=layers, hidden_size=32, num_attention_heads=2,
                  intermediate_size=64, vocab_size=30522)
    return {
        "bert": lambda: BertConfig(**common),
        "roberta": lambda: RobertaConfig(**common),
        "electra": lambda: ElectraConfig(**common, embedding_size=32),
        "distilbert": lambda: DistilBertConfig(n_layers=layers, dim=32, n_heads=2, hidden_dim=64,
                                               vocab_size=30522),
        "deberta-v2": lambda: DebertaV2Config(**common),
    }[family]()


def tiny_model_dir(tmp_path: Path, family: str, base) -> Path:
    """A folder holding a randomly initialised tiny model of a family and the bundled tokenizer."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    folder = tmp_path / f"tiny-{family}"
    AutoModel.from_config(tiny_config(family)).save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def stack():
    """The native server stack (infra/stack.py): PostgreSQL, an MLflow server and a Prefect
    server with its UI, on loopback; started once for the tests that need servers. PostgreSQL
    comes from where infra/pgbin.py finds it: $PG_BIN, the system's, or the dev extra's wheel."""
    import sys

    sys.path.insert(0, str(ROOT / "infra"))
    from pgbin import PostgresNotFound
    from stack import Stack

    try:
        running = Stack(ui=True)
    except PostgresNotFound as error:
        pytest.fail(f"the server tests need PostgreSQL: {error}")
    with running:
        yield running
