"""The bias-only artifact: the trained tensors as safetensors plus a JSON manifest.

An artifact is kilobytes for BitFit, not a checkpoint: it holds only what a run trained (the biases
and the head; for ``rand``, the chosen scalars and their positions) and names the base model by id
and by a SHA-256 of its weights. Applying it to that base model gives the fine-tuned model exactly;
applying it to any other is refused. Loading reads safetensors and JSON only, never a pickle.

Only a completed run makes an artifact: a diverged or stopped run's tensors are not written, and a
manifest that says otherwise is refused. The manifest's fields that change what the artifact does
(base model, pooling, task, method, subset, status, tensors, the input length, the LoRA rank) are
sealed by ``identity_sha256``, so that a hand edit (making it load on another pooling, say) is
refused rather than obeyed. The tensors file carries the same fields in its header, so a manifest
cannot be passed off as one written before the seal existed (format 1) to escape it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from bitfit.methods import known, method
from bitfit.models import BaseModel, TextClassifier
from bitfit.tasks import Task

TENSORS = "trained.safetensors"
MANIFEST = "manifest.json"
# 3: the seal covers max_length and the LoRA rank too, and the tensors file carries it;
# 2: identity_sha256; 1 (before it) is still read where its tensors carry no seal
FORMAT = 3
_IDENTITY = ("base_model", "base_weights_sha256", "family", "pooling", "task", "method", "subset",
             "status", "tensors_sha256")
_IDENTITY_TASK = ("label_names", "regression", "text_columns")
_SEALED_MORE = ("max_length", "lora_rank")  # format 3
SEAL_KEY = "bitfit_seal"  # the sealed fields, in the safetensors header's metadata
DEFAULT_MAX_LENGTH = 128
# What apply_artifact and Predictor read, and its JSON type.
_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "format": int, "base_model": str, "base_weights_sha256": str, "family": str, "pooling": str,
    "task": dict, "method": str, "subset": (str, type(None)), "status": str,
    "tensors_sha256": str}
_TASK_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "name": str, "label_names": list, "regression": bool, "text_columns": list}


class ArtifactError(ValueError):
    """An artifact that is malformed or does not fit the base model it is applied to."""


def unique_folder(parent: Path, name: str) -> Path:
    """A new, empty folder ``parent/name``, or ``name-2``, ``name-3``, ... when it exists: a run
    never writes into another run's folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = parent / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise OSError(f"{str(parent)!r} already holds 10,000 folders named {name!r}: give another "
                  "name or clear old ones")


_RUN_FIELDS = ("config", "precision", "status", "best_step", "metrics", "best_metrics",
               "train_metrics", "trainable_params", "trainable_fraction")


def save_artifact(trained: dict[str, torch.Tensor], base: BaseModel, task: Task,
                  out_dir: str | os.PathLike[str], *, run: dict[str, Any],
                  masks: dict[str, torch.Tensor] | None = None,
                  extra: dict[str, object] | None = None) -> Path:
    """Write trained tensors and their manifest into ``out_dir``.

    Args:
        trained: the trained tensors by name in the classifier (``encoder.…``, ``head.…``).
        base, task: what they were trained on.
        out_dir: the folder to write (made if missing).
        run: what the manifest says of the run: ``method``, ``config`` (a ``TrainConfig`` as a
            dict), ``status`` and the other fields of ``TrainResult.artifact_fields()``.
        masks: rand's masks by the same names: only the chosen scalars are stored.
        extra: more manifest keys (none of the manifest's own).

    Returns:
        The folder written.

    Raises:
        ArtifactError: the run did not complete (it diverged or was stopped); nothing is written.
    """
    if run["status"] != "completed":
        reason = f" ({run['message']})" if run.get("message") else ""
        raise ArtifactError(
            f"cannot save an artifact of a run that ended {run['status']!r}{reason}: only a "
            f"completed run makes an artifact, so nothing was written")
    tensors: dict[str, torch.Tensor] = {}
    for name, value in trained.items():
        mask = (masks or {}).get(name)
        if mask is None:
            tensors[name] = value.contiguous()
        else:  # rand: store the chosen scalars and where they go, not the whole matrix
            tensors[f"{name}:indices"] = mask.flatten().nonzero().flatten()
            tensors[f"{name}:values"] = value.flatten()[mask.flatten()].contiguous()
    manifest = _manifest(base, task, run)
    clash = sorted(set(extra or {}) & {*manifest, "identity_sha256"})
    if clash:  # extra must not override what the manifest itself records
        raise ValueError(f"extra manifest key {clash[0]!r} is one of the manifest's own")
    manifest.update(extra or {})
    blob = save(tensors, metadata={SEAL_KEY: _canonical(_sealed(manifest))})
    manifest["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    manifest["identity_sha256"] = _identity_sha256(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / TENSORS).write_bytes(blob)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def _manifest(base: BaseModel, task: Task, run: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run, its tensors' hash still empty."""
    return {
        "format": FORMAT,
        "base_model": base.model_id,
        "base_weights_sha256": base.weights_hash,
        "family": base.family,
        "pooling": base.pooling,
        "task": {"name": task.name, "label_names": list(task.label_names),
                 "regression": task.is_regression, "text_columns": list(task.text_columns),
                 "metrics": list(task.metrics)},
        "method": run["method"],
        "subset": run["config"]["subset"] if method(run["method"]).takes_subset else None,
        **{key: run[key] for key in _RUN_FIELDS},
        "tensors_sha256": "",  # below, once the tensors carry the seal
        "versions": {"bitfit": package_version("bitfit"), "torch": torch.__version__,
                     "transformers": package_version("transformers"),
                     "safetensors": package_version("safetensors"),
                     "python": platform.python_version()},
    }


def package_version(package: str) -> str:
    """An installed package's version, or "unknown"."""
    try:
        return version(package)
    except Exception:  # noqa: BLE001 - an uninstalled package simply has no version to record
        return "unknown"


def load_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artifact folder: its manifest and its tensors (safetensors, no unpickling).

    An artifact written before ``identity_sha256`` existed (format 1) is read when it is
    otherwise valid.

    Raises:
        FileNotFoundError: the folder lacks the manifest or the tensors.
        ArtifactError: a damaged or edited manifest, a run that did not complete, or tensors that
            do not match the manifest's hash.
    """
    folder = Path(path)
    for name in (MANIFEST, TENSORS):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} is not a bitfit artifact: it has no {name}; pass the folder "
                f"that a training run printed"
            )
    manifest = _read_manifest(folder / MANIFEST)
    if manifest["status"] != "completed":
        raise ArtifactError(
            f"artifact {str(folder)!r} comes from a run that ended {manifest['status']!r}: it "
            f"was not trained to completion; use an artifact of a completed run")
    if manifest["format"] >= 2 and manifest["identity_sha256"] != _identity_sha256(manifest):
        raise _edited(folder, manifest, "its identity_sha256")
    blob = (folder / TENSORS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest["tensors_sha256"]:
        raise ArtifactError(f"{str(folder / TENSORS)!r} does not match its manifest's hash: "
                            f"the artifact was altered; retrain or restore it")
    seal = _tensor_seal(blob)
    if seal is not None and (manifest["format"] < 3 or seal != _canonical(_sealed(manifest))):
        raise _edited(folder, manifest, "the seal its tensors carry")
    if seal is None and manifest["format"] >= 3:
        raise ArtifactError(f"{str(folder / TENSORS)!r} carries no seal, and its format-3 "
                            f"manifest says it should: the artifact was altered; retrain or "
                            f"restore it")
    try:
        return manifest, load(blob)
    except SafetensorError as err:  # a format-1 manifest may hash a file that is not one
        raise ArtifactError(f"{str(folder / TENSORS)!r} is not a safetensors file ({err}); "
                            f"retrain or restore it") from None


def max_length_of(manifest: dict[str, Any]) -> int:
    """The input length, in tokens, that the artifact's run trained with and predicts with."""
    value = (manifest.get("data") or {}).get("max_length")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) \
        else DEFAULT_MAX_LENGTH


def _adds_modules(manifest: dict[str, Any]) -> bool:
    """Whether the manifest's method adds modules (an unknown one is refused elsewhere)."""
    record = known(manifest.get("method"))
    return record is not None and record.adds_modules


def _sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide what an artifact predicts, less the tensors' hash (format 3)."""
    sealed = {key: manifest[key] for key in _IDENTITY if key != "tensors_sha256"}
    sealed["task"] = {key: manifest["task"][key] for key in _IDENTITY_TASK}
    sealed["max_length"] = max_length_of(manifest)
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    sealed["lora_rank"] = config.get("lora_rank") if _adds_modules(manifest) else None
    return sealed


def _canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _identity_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the fields that decide what an artifact does, as canonical JSON."""
    if manifest["format"] >= 3:
        identity = {**_sealed(manifest), "tensors_sha256": manifest["tensors_sha256"]}
    else:
        identity = {key: manifest[key] for key in _IDENTITY}
        identity["task"] = {key: manifest["task"][key] for key in _IDENTITY_TASK}
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()


def _tensor_seal(blob: bytes) -> str | None:
    """The sealed fields a tensors file carries in its header (None: written before the seal)."""
    try:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + size])
        seal = (header.get("__metadata__") or {}).get(SEAL_KEY)
    except (ValueError, AttributeError):
        return None
    return _canonical(json.loads(seal)) if isinstance(seal, str) else None


def _edited(folder: Path, manifest: dict[str, Any], against: str) -> ArtifactError:
    fields = [*_IDENTITY, *(_SEALED_MORE if manifest["format"] >= 3 else ())]
    return ArtifactError(
        f"manifest {str(folder / MANIFEST)!r} was edited after its run wrote it (one of "
        f"{', '.join(fields)} changed?), so it no longer matches {against}; restore the "
        f"original manifest or retrain")


def _read_manifest(file: Path) -> dict[str, Any]:
    """The manifest, checked to hold what ``save_artifact`` writes and the readers use."""
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:  # invalid JSON, or not UTF-8 text
        raise _damaged(file, f"not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise _damaged(file, f"expected a JSON object, got {_json_type(type(manifest))}")
    problem = _typed_keys(manifest, {"format": int}, "")
    if problem:
        raise _damaged(file, problem)
    if manifest["format"] not in range(1, FORMAT + 1):
        raise ArtifactError(f"manifest {str(file)!r} has format {manifest['format']}, which this "
                            f"bitfit does not read (1 to {FORMAT}): upgrade bitfit or retrain")
    problem = _manifest_problem(manifest)
    if problem:
        raise _damaged(file, problem)
    return manifest


def _damaged(file: Path, problem: str) -> ArtifactError:
    return ArtifactError(f"manifest {str(file)!r} is damaged ({problem}): restore it from a copy "
                         f"or retrain")


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    schema = {**_SCHEMA, **({"identity_sha256": str} if manifest["format"] >= 2 else {})}
    problem = _typed_keys(manifest, schema, "") or _typed_keys(manifest["task"], _TASK_SCHEMA,
                                                                "task.")
    if problem:
        return problem
    task = manifest["task"]
    for key in ("label_names", "text_columns"):
        if not all(isinstance(v, str) for v in task[key]):
            return f"key 'task.{key}' should be a list of strings, got {task[key]!r}"
    if not 1 <= len(task["text_columns"]) <= 2:
        return f"key 'task.text_columns' should name one or two columns, got {task['text_columns']}"
    if not task["regression"] and not task["label_names"]:
        return "key 'task.label_names' is empty for a classification task"
    data = manifest.get("data", {})
    if not isinstance(data, dict) or not _is(data.get("max_length", 128), int):
        return f"key 'data' should be an object with an integer max_length, got {data!r}"
    return None


def _typed_keys(section: dict[str, Any], schema: dict[str, type | tuple[type, ...]],
                prefix: str) -> str | None:
    for key, kind in schema.items():
        if key not in section:
            return f"key '{prefix}{key}' is missing"
        if not _is(section[key], kind):
            return f"key '{prefix}{key}' should be {_json_type(kind)}, got {section[key]!r}"
    return None


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON true is a Python bool, and so an int: it is not a number here
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


_JSON_TYPES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null", float: "a number"}


def _json_type(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_JSON_TYPES.get(k, k.__name__) for k in kinds)


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
    if _adds_modules(manifest):  # the adapters' tensors need the adapters
        from bitfit.lora import add_adapters

        add_adapters(base, rank=int(manifest["config"]["lora_rank"]))
    model.eval()
    params = dict(model.named_parameters())
    dense = {n: t for n, t in tensors.items() if ":" not in n}
    sparse = sorted({n.rsplit(":", 1)[0] for n in tensors if ":" in n})
    unknown = [n for n in [*dense, *sparse] if n not in params]
    if unknown:
        raise ArtifactError(f"artifact {str(path)!r} holds {unknown[0]!r}, which this model "
                            f"does not have")
    base.remember([n.removeprefix("encoder.") for n in [*dense, *sparse]
                   if n.startswith("encoder.") and ".lora_" not in n])  # adapters go whole
    with torch.no_grad():
        for name, value in dense.items():
            params[name].copy_(value)
        for name in sparse:
            flat = params[name].view(-1)
            flat[tensors[f"{name}:indices"]] = tensors[f"{name}:values"]
    return model


def load_base_of(manifest: dict[str, Any]) -> BaseModel:
    """The base model an artifact's manifest names, loaded with the pooling it was trained with."""
    from bitfit.models import BUNDLED, load_base

    model_id = manifest["base_model"]
    return load_base(None if model_id == BUNDLED else model_id, pooling=manifest["pooling"])


class Predictor:
    """A fine-tuned classifier rebuilt from an artifact, callable on raw text.

    ``Predictor(path)(["a sentence", ...])`` gives label names (or floats for regression); for a
    two-text task pass ``(first, second)`` pairs.
    """

    def __init__(self, path: str | os.PathLike[str], *, base: BaseModel | None = None) -> None:
        manifest, _ = load_artifact(path)
        self.base = base or load_base_of(manifest)
        self.model = apply_artifact(self.base, path)
        self.manifest = manifest
        self.max_length = max_length_of(manifest)

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
