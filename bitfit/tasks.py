"""Task specs: the nine GLUE tasks and custom tasks read from files.

A ``Task`` says where the text and the label live in each source (the official GLUE TSVs, the Hub's
``nyu-mll/glue``, or a user's files), whether it is classification or regression, and which metrics
it is judged by, the first being the main metric a search optimises.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    """What a task is made of.

    Attributes:
        name: short name (``cola``) or a custom task's name.
        text_columns: one or two canonical text columns, as named in the Hub dataset.
        label_names: class names in label-id order; empty for regression.
        regression: a float target (one output) instead of classes.
        metrics: metric names; the first is the main metric (higher is better for all of them).
        glue_dir: folder of the task inside an official GLUE directory (``CoLA``).
        tsv_columns: for the official TSVs, column (name or index) of each text column then label.
        tsv_header: whether the official TSV has a header row.
        dev_files: official dev file name per evaluation split, the first being the main one.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    glue_dir: str = ""
    tsv_columns: tuple[str | int, ...] = ()
    tsv_header: bool = True
    dev_files: dict[str, str] = field(default_factory=lambda: {"validation": "dev.tsv"})
    label_column: str = "label"
    regression: bool = False
    columns: tuple[str, ...] = ()  # a custom task's column names, for files without a header

    def __post_init__(self) -> None:
        if not 1 <= len(self.text_columns) <= 2:
            raise ValueError(
                f"a task needs one or two text columns, got {list(self.text_columns)}"
            )
        if not self.metrics:
            raise ValueError(f"task {self.name!r} needs at least one metric")

    @property
    def is_regression(self) -> bool:
        return self.regression

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(self.dev_files)


_NLI = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc", "accuracy"),
             "CoLA", (3, 1), tsv_header=False),
        Task("sst2", ("sentence",), ("negative", "positive"), ("accuracy",),
             "SST-2", ("sentence", "label")),
        Task("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             ("f1", "accuracy"), "MRPC", ("#1 String", "#2 String", "Quality")),
        Task("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman"),
             "STS-B", ("sentence1", "sentence2", "score"), regression=True),
        Task("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
             ("f1", "accuracy"), "QQP", ("question1", "question2", "is_duplicate")),
        Task("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("accuracy",), "MNLI", ("sentence1", "sentence2", "gold_label"),
             dev_files={"validation_matched": "dev_matched.tsv",
                        "validation_mismatched": "dev_mismatched.tsv"}),
        Task("qnli", ("question", "sentence"), _NLI, ("accuracy",),
             "QNLI", ("question", "sentence", "label")),
        Task("rte", ("sentence1", "sentence2"), _NLI, ("accuracy",),
             "RTE", ("sentence1", "sentence2", "label")),
        Task("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
             "WNLI", ("sentence1", "sentence2", "label")),
    ]
}


def is_glue_task(name: str) -> bool:
    """Whether ``name`` names a GLUE task (case-insensitive, ``sst-2`` too)."""
    return _key(name) in GLUE_TASKS


def _key(name: str) -> str:
    return name.lower().replace("-", "")


def load_task(name: str) -> Task:
    """Look up a GLUE task by name (``cola``, ``sst2``, ..., case-insensitive, ``sst-2`` too).

    Raises:
        ValueError: the name is not a GLUE task.
    """
    if not is_glue_task(name):
        raise ValueError(
            f"unknown task {name!r}: use one of {', '.join(GLUE_TASKS)}, or give --train-file "
            f"and --dev-file for a custom task"
        )
    return GLUE_TASKS[_key(name)]


def custom_task(
    name: str,
    *,
    text_columns: tuple[str, ...],
    label_column: str = "label",
    label_names: tuple[str, ...] = (),
    regression: bool = False,
    columns: tuple[str, ...] = (),
) -> Task:
    """A task read from the user's own files.

    Args:
        name: the task's name, used in cache keys and manifests.
        text_columns: one or two columns holding the text.
        label_column: the column holding the label.
        label_names: class names; when empty for a classification task they are read from the
            training file (sorted unique values).
        regression: a float target scored by Pearson and Spearman instead of classes.
        columns: the names of the columns of CSV/TSV files that have no header row.
    """
    metrics = ("pearson", "spearman") if regression else ("accuracy", "f1_macro")
    return Task(name, tuple(text_columns), () if regression else tuple(label_names), metrics,
                label_column=label_column, dev_files={"validation": ""}, regression=regression,
                columns=tuple(columns))
