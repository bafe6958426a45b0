"""The bias-only artifact: the trained tensors as safetensors plus a JSON manifest.

An artifact is kilobytes for BitFit, not a checkpoint: it holds only what a run trained (the biases
and the head; for ``rand``, the chosen scalars and their positions) and names the base model by id
and by a SHA-256 of its weights. Applying it to that base model gives the fine-tuned model exactly;
applying it to any other is refused. Loading reads safetensors and JSON only, never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bitfit.models import BaseModel, TextClassifier
from bitfit.tasks import Task
from bitfit.train import TrainResult

TENSORS = "trained.safetensors"
MANIFEST = "manifest.json"
FORMAT = 1


class ArtifactError(ValueError):
    """An artifact that is malformed or does not fit the base model it is applied to."""


def save_artifact(result: TrainResult, base: BaseModel, task: Task, out_dir: str | os.PathLike[str],
                  *, extra: dict[str, object] | None = None) -> Path:
    """Write a run's best trained tensors and manifest into ``out_dir``.

    Returns:
        The folder written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in result.trained.items():
        mask = result.rand_masks.get(name)
        if mask is None:
            tensors[name] = value.contiguous()
        else:  # rand: store the chosen scalars and where they go, not the whole matrix
            tensors[f"{name}:indices"] = mask.flatten().nonzero().flatten()
            tensors[f"{name}:values"] = value.flatten()[mask.flatten()].contiguous()
    save_file(tensors, out / TENSORS)
    manifest = {
        "format": FORMAT,
        "base_model": base.model_id,
        "base_weights_sha256": base.weights_hash,
        "family": base.family,
        "pooling": base.pooling,
        "task": {"name": task.name, "label_names": list(task.label_names),
                 "regression": task.is_regression, "text_columns": list(task.text_columns),
                 "metrics": list(task.metrics)},
        "method": result.config.method,
        "subset": result.config.subset if result.config.method in ("bitfit", "rand") else None,
        "config": asdict(result.config),
        "precision": result.precision,
        "status": result.status,
        "best_step": result.best.step if result.best else None,
        "metrics": result.metrics,
        "best_metrics": result.best_metrics,
        "train_metrics": result.train_metrics,
        "trainable_params": result.trainable_params,
        "trainable_fraction": result.trainable_fraction,
        "tensors_sha256": hashlib.sha256((out / TENSORS).read_bytes()).hexdigest(),
        "versions": {"bitfit": _version("bitfit"), "torch": torch.__version__,
                     "transformers": _version("transformers"),
                     "safetensors": _version("safetensors"),
                     "python": platform.python_version()},
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def _version(package: str) -> str:
    try:
        return version(package)
    except Exception:  # noqa: BLE001 - an uninstalled package simply has no version to record
        return "unknown"


def load_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artifact folder: its manifest and its tensors (safetensors, no unpickling).

    Raises:
        FileNotFoundError: the folder lacks the manifest or the tensors.
        ArtifactError: the tensors do not match the manifest's hash.
    """
    folder = Path(path)
    for name in (MANIFEST, TENSORS):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} is not a bitfit artifact: it has no {name}; pass the folder "
                f"that a training run printed"
            )
    manifest = json.loads((folder / MANIFEST).read_text())
    blob = (folder / TENSORS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest.get("tensors_sha256"):
        raise ArtifactError(f"{str(folder / TENSORS)!r} does not match its manifest's hash: "
                            f"the artifact was altered; retrain or restore it")
    return manifest, load_file(folder / TENSORS)


def apply_artifact(base: BaseModel, path: str | os.PathLike[str]) -> TextClassifier:
    """Rebuild the fine-tuned classifier from a loaded base model and an artifact.

    Raises:
        ArtifactError: the artifact was trained on other weights or another pooling.
    """
    manifest, tensors = load_artifact(path)
    if manifest["base_weights_sha256"] != base.weights_hash:
        raise ArtifactError(
            f"artifact {str(path)!r} was trained on base model {manifest['base_model']!r} "
            f"(weights sha256 {str(manifest['base_weights_sha256'])[:12]}…), not on the loaded "
            f"{base.model_id!r} (sha256 {base.weights_hash[:12]}…): load the base model it names"
        )
    if manifest["pooling"] != base.pooling:
        raise ArtifactError(
            f"artifact {str(path)!r} was trained with pooling {manifest['pooling']!r}, but the "
            f"base model was loaded with {base.pooling!r}: load it with "
            f"--pooling {manifest['pooling']}"
        )
    task = manifest["task"]
    num_labels = 1 if task["regression"] else len(task["label_names"])
    model = base.classifier(num_labels, seed=0)
    model.eval()
    params = dict(model.named_parameters())
    dense = {n: t for n, t in tensors.items() if ":" not in n}
    sparse = sorted({n.rsplit(":", 1)[0] for n in tensors if ":" in n})
    unknown = [n for n in [*dense, *sparse] if n not in params]
    if unknown:
        raise ArtifactError(f"artifact {str(path)!r} holds {unknown[0]!r}, which this model "
                            f"does not have")
    base.remember([n.removeprefix("encoder.") for n in [*dense, *sparse]
                   if n.startswith("encoder.")])
    with torch.no_grad():
        for name, value in dense.items():
            params[name].copy_(value)
        for name in sparse:
            flat = params[name].view(-1)
            flat[tensors[f"{name}:indices"]] = tensors[f"{name}:values"]
    return model



class Predictor:
    """A fine-tuned classifier rebuilt from an artifact, callable on raw text.

    ``Predictor(path)(["a sentence", ...])`` gives label names (or floats for regression); for a
    two-text task pass ``(first, second)`` pairs.
    """

    def __init__(self, path: str | os.PathLike[str], *, base: BaseModel | None = None) -> None:
        from bitfit.models import BUNDLED, load_base

        manifest, _ = load_artifact(path)
        model_id = manifest["base_model"]
        self.base = base or load_base(None if model_id == BUNDLED else model_id,
                                      pooling=manifest["pooling"])
        self.model = apply_artifact(self.base, path)
        self.manifest = manifest
        self.max_length = int(manifest.get("data", {}).get("max_length", 128))

    @torch.inference_mode()
    def __call__(self, texts: list[str] | list[tuple[str, str]]) -> list[str] | list[float]:
        pairs = [t if isinstance(t, tuple) else (t,) for t in texts]
        columns = list(zip(*pairs, strict=True))
        batch = self.base.tokenizer(*[list(c) for c in columns], truncation=True,
                                    max_length=self.max_length, padding=True,
                                    return_tensors="pt")
        device = next(self.model.parameters()).device
        logits = self.model(**{k: v.to(device) for k, v in batch.items()}).cpu()
        task = self.manifest["task"]
        if task["regression"]:
            return logits[:, 0].tolist()
        return [task["label_names"][i] for i in logits.argmax(-1).tolist()]
