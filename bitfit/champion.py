"""Champion and challenger: the figures a registered model version is judged by, and whether a
new version of ``bitfit-<task>`` displaces its champion.

A version's ``Standing`` is its final evaluation's mean of the task's main metric over the BitFit
seeds. Two standings compare like for like when they were measured on the same basis (``BASIS``):
the same task and main metric, the same evaluation split (its name, its row count and a
fingerprint of its texts and labels) and the same selection (the split the configuration was
chosen on: one chosen on dev scores optimistically on dev). The base model, its tokenizer, the
input length, the training rows (a ``--quick`` run's 2,000 or the whole split) and the number of
seeds are not part of the basis: they make the candidate, not the measurement; the training rows
and seeds are recorded beside it. ``judge`` decides: the first version is champion; a new one
becomes champion when its mean is higher on the same basis, or when promoted; otherwise the
champion stays and the reason is said.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import asdict, dataclass

# what "the same data" is: two standings with these equal compare like for like
BASIS = ("task", "metric", "eval_split", "dev_rows", "dev_fingerprint", "selected_on")
CHAMPION, CHALLENGER = "champion", "challenger"  # the registered model's aliases
PROMOTE = "--promote"  # how a user says so (the flows' parameter: promote=True)


@dataclass(frozen=True)
class Standing:
    """The figures a version is judged by: the mean (and standard deviation) of the main metric
    over the evaluation's BitFit seeds, and the basis it was measured on (``BASIS``'s keys)."""

    mean: float
    std: float  # NaN with one seed
    seeds: int
    basis: dict[str, str]
    evaluation_run_id: str = ""
    train_rows: int | None = None  # what each seed trained on (recorded; not in the basis)

    def __post_init__(self) -> None:
        missing = [k for k in BASIS if k not in self.basis]
        if missing:
            raise ValueError(f"a standing's basis needs {', '.join(missing)}: give every one of "
                             f"{', '.join(BASIS)}")

    @classmethod
    def of(cls, values: list[float], *, basis: dict[str, object], evaluation_run_id: str = "",
           train_rows: int | None = None) -> Standing:
        """The standing of an evaluation's per-seed scores."""
        if not values:
            raise ValueError("a standing needs the score of at least one seed")
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(float(statistics.fmean(values)), float(std), len(values),
                   {k: str(v) for k, v in basis.items()}, evaluation_run_id, train_rows)

    @property
    def metric(self) -> str:
        return self.basis["metric"]

    @property
    def key(self) -> str:
        """A digest of the basis: the same key, a like-for-like comparison."""
        text = json.dumps([self.basis[k] for k in BASIS])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        """The standing as a model version's tags (``from_tags`` reads them back)."""
        return {**{k: self.basis[k] for k in BASIS}, "metric_mean": repr(self.mean),
                "metric_std": repr(self.std), "seeds": str(self.seeds), "data_key": self.key,
                "evaluation_run_id": self.evaluation_run_id,
                "train_rows": "" if self.train_rows is None else str(self.train_rows)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Standing | None:
        """The standing a version's tags record; None where they record none (a version
        registered before versions kept their figures)."""
        try:
            return cls(float(tags["metric_mean"]), float(tags["metric_std"]),
                       int(tags["seeds"]), {k: tags[k] for k in BASIS},
                       tags.get("evaluation_run_id", ""),
                       int(tags["train_rows"]) if tags.get("train_rows") else None)
        except (KeyError, ValueError):
            return None

    def differences(self, other: Standing) -> list[str]:
        """How the basis of ``other`` differs from this one, a phrase per field."""
        return [f"{k.replace('_', ' ')} {other.basis[k]} against {self.basis[k]}"
                for k in BASIS if self.basis[k] != other.basis[k]]

    def figure(self) -> str:
        return f"{self.mean:.4f}"


@dataclass(frozen=True)
class Registration:
    """A new version and what became of it: ``champion`` is the champion's version after it
    (the new one when it won), ``margin`` the new mean less the champion's on the same basis
    (None where there was no champion or no like-for-like figure)."""

    model: str
    version: int
    champion: int
    reason: str
    margin: float | None = None
    promoted: bool = False  # made champion because the user said so

    @property
    def won(self) -> bool:
        return self.champion == self.version

    @property
    def uri(self) -> str:
        """The new version's ``models:/`` URI: by the alias while it is champion."""
        return (f"models:/{self.model}@{CHAMPION}" if self.won
                else f"models:/{self.model}/{self.version}")

    def as_dict(self) -> dict:
        return {**asdict(self), "won": self.won, "uri": self.uri}


def judge(model: str, version: int, new: Standing, champion: int | None,
          held: Standing | None, *, promote: bool = False) -> Registration:
    """Whether version ``version`` (standing ``new``) displaces the champion, version
    ``champion`` (standing ``held``, None where its tags record none; no champion: None)."""
    if champion is None:
        return Registration(model, version, version, f"version {version} is the first of "
                            f"{model}: it is champion (mean dev {new.metric} {new.figure()} "
                            f"over {new.seeds} seeds)")
    challenger = f"the new version {version} ({new.figure()})"
    if held is None or held.differences(new):
        why = (f"version {champion} records no figures (registered before versions kept them)"
               if held is None else f"version {champion} was measured on another basis ("
               + "; ".join(held.differences(new)) + ")")
        if promote:
            return Registration(model, version, version, f"version {version} is champion by "
                                f"{PROMOTE}; it is not compared, as {why}", promoted=True)
        return Registration(model, version, champion, f"champion stays: {why}, so {challenger} "
                            f"is not compared with it; it is the {CHALLENGER} (make it champion "
                            f"with {PROMOTE})")
    margin = new.mean - held.mean
    if margin > 0 or promote:
        how = f" by {PROMOTE}" if margin <= 0 or math.isnan(margin) else ""
        return Registration(model, version, version, f"version {version} is champion{how}: "
                            f"mean dev {new.metric} {new.figure()} against version {champion}'s "
                            f"{held.figure()} ({margin:+.4f})", margin, promoted=bool(how))
    beats = (f"beats {challenger} by {-margin:.4f}" if margin < 0
             else f"is not beaten by {challenger}")
    return Registration(model, version, champion, f"champion stays: version {champion} "
                        f"({held.figure()}) {beats} on mean dev {new.metric}; version {version} "
                        f"is the {CHALLENGER}", margin)
