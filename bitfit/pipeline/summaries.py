"""What a run reports: progress lines to a ``Report``, and its results as typed summaries (a
study's, a final evaluation's, a whole run's), each printed and written as Markdown by its own
methods."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class Report:
    """Where a run tells what it is doing. This one writes progress lines to stderr; the flows
    pass one that also writes to the Prefect run (its logs, a progress bar and result
    artifacts)."""

    def line(self, text: str) -> None:
        _stderr(text)

    def progress(self, what: str, done: int, total: int) -> None:
        """``done`` of ``total`` trials of a study, or final runs of an evaluation."""

    def finished(self, summary: Any) -> None:
        """The run ended: its summary (``run``'s ``RunSummary``, ``evaluate``'s
        ``EvaluationSummary``, or a reproduction's dict)."""


STDERR = Report()


# --------------------------------------------------------------------------- summaries


@dataclasses.dataclass
class StudySummary:
    """What a study found (``as_dict``: JSON-ready, as ``run`` returns it)."""

    study_name: str
    task: str
    storage: str
    tracking_uri: str
    experiment_id: str | None
    mlflow_parent_run_id: str | None
    trials_run: int
    trials: int
    selection_split: str
    metric: str
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    mlflow_ui: str
    mlflow_runs: str = ""  # the experiment's runs page where ``mlflow_ui`` serves the store
    trial_table: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pareto: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, summary: dict[str, Any]) -> StudySummary:
        """A study's summary from its dict (keys it does not know are left out)."""
        return cls(**_known(cls, summary))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pareto_text(self) -> str:
        """The study's Pareto front of score against trainable parameters, in a line."""
        return ("Pareto front (no trial scores higher with as few trainable parameters): "
                + "; ".join(f"{p['trial']}: {p['trainable_params']:,} parameters, {self.metric} "
                            f"{p['value']:.4f}" for p in self.pareto))

    def _params(self, joint: str) -> str:
        return ", ".join(f"{k}{joint}{v}" for k, v in (self.best_params or {}).items())

    def lines(self) -> list[str]:
        """Its best trial as the commands print it."""
        if self.best_value is None:
            return [f"study {self.study_name}: no trial completed yet"]
        lines = [f"study {self.study_name}: best {self.metric} on {self.selection_split} "
                 f"{self.best_value:.4f} (trial {self.best_trial}: {self._params('=')}); "
                 f"{self.trials} trials in {self.storage}"]
        return lines + ([f"  {self.pareto_text()}"] if len(self.pareto or []) > 1 else [])

    def markdown_lines(self) -> list[str]:
        """Its best trial as a Markdown list item."""
        if self.best_value is None:
            return [f"- study `{self.study_name}`: no trial completed yet"]
        lines = [f"- study `{self.study_name}`: best {self.metric} on {self.selection_split} "
                 f"**{self.best_value:.4f}** (trial {self.best_trial}: {self._params(' = ')}) "
                 f"of {self.trials} trials"]
        return lines + ([f"  - {self.pareto_text()}"] if len(self.pareto or []) > 1 else [])


@dataclasses.dataclass
class EvaluationSummary:
    """What a final evaluation found (``as_dict``: JSON-ready, as ``evaluate`` returns it)."""

    table: str
    test_table: str | None
    task: str
    tracking_uri: str
    experiment_id: str | None
    registered_model: str | None
    verdict: dict[str, Any] | None
    verdict_text: str
    majority_class: Any
    report: str
    evaluation_run_id: str | None
    best_artifact: str | None
    recipe: str
    runs: dict[str, dict[str, float]]
    test_runs: dict[str, dict[str, float]] | None = None  # with a test file only
    prefect_flow_run: dict[str, Any] | None = None  # set by a flow's report
    # the new version, the champion after it, the margin and why (champion.Registration)
    registration: dict[str, Any] | None = None

    @classmethod
    def of(cls, summary: dict[str, Any]) -> EvaluationSummary:
        """An evaluation's summary from its dict."""
        return cls(**_known(cls, summary))

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items()
                if v is not None or k not in ("test_runs", "prefect_flow_run", "registration")}

    @property
    def decision(self) -> str:
        """What became of the new version in the registry, in a sentence."""
        return (self.registration or {}).get("reason", "")

    def lines(self) -> list[str]:
        """The comparison table, the test, and how to use the best artifact, as printed."""
        lines = [self.table]
        if self.test_table:
            lines.append(f"\non the test file:\n{self.test_table}\n")
        if self.verdict_text:
            lines.append(self.verdict_text.replace("**", ""))
        lines.append(f"report, table and plots: {self.report}")
        if self.registered_model:
            lines.append(f"registered in MLflow as {self.registered_model}")
        if self.decision:
            lines.append(f"  {self.decision}")
        if self.best_artifact:
            lines += [f"best BitFit seed's artifact: {self.best_artifact}; use it with:",
                      self.recipe]
        return lines

    def markdown_lines(self) -> list[str]:
        """The comparison, the test and the registered model, as a Markdown section."""
        lines = ["", "## Final evaluation", "", self.table]
        if self.test_table:
            lines += ["", "### On the test file", "", self.test_table]
        if self.verdict_text:
            lines += ["", self.verdict_text]
        if self.decision:
            lines += ["", f"Model registry: {self.decision}."]
        if self.registered_model:
            lines += ["", f"The best BitFit seed is the MLflow model `{self.registered_model}`:",
                      "", "```python", "import mlflow, pandas as pd",
                      f"model = mlflow.pyfunc.load_model(\"{self.registered_model}\")",
                      "print(model.predict(pd.DataFrame({\"sentence\": [\"The cat sat on the "
                      "mat.\"]})))", "```"]
        return lines + ["", f"Report, table and plots: `{self.report}`"]

    def markdown(self) -> str:
        return _markdown(self.task, [], self)


@dataclasses.dataclass
class RunSummary:
    """What ``run`` found: the BitFit study, the baseline study and the final evaluation
    (``as_dict``: JSON-ready, the study's fields with ``baseline`` and ``evaluation``)."""

    study: StudySummary
    baseline: StudySummary | None = None
    evaluation: EvaluationSummary | None = None
    prefect_flow_run: dict[str, Any] | None = None  # set by a flow's report

    @classmethod
    def of(cls, summary: dict[str, Any]) -> RunSummary:
        """A run's summary from its dict."""
        baseline, evaluation = summary.get("baseline"), summary.get("evaluation")
        return cls(StudySummary.of(summary), baseline and StudySummary.of(baseline),
                   evaluation and EvaluationSummary.of(evaluation),
                   summary.get("prefect_flow_run"))

    def as_dict(self) -> dict[str, Any]:
        parts = {"baseline": self.baseline and self.baseline.as_dict(),
                 "evaluation": self.evaluation and self.evaluation.as_dict(),
                 "prefect_flow_run": self.prefect_flow_run}
        return {**self.study.as_dict(), **{k: v for k, v in parts.items() if v is not None}}

    @property
    def task(self) -> str:
        return self.study.task

    @property
    def studies(self) -> list[StudySummary]:
        return [s for s in (self.study, self.baseline) if s is not None]

    def lines(self) -> list[str]:
        """The studies' best trials, the comparison, and where MLflow and Prefect show it."""
        lines = [line for study in self.studies for line in study.lines()]
        if self.evaluation:
            lines += ["", *self.evaluation.lines(), ""]
        lines.append(f"MLflow: search run {self.study.mlflow_parent_run_id}"
                     + (f", evaluation run {self.evaluation.evaluation_run_id}"
                        if self.evaluation else "") + f" in {self.study.tracking_uri}")
        lines.append(f"see it: {self.study.mlflow_ui}")
        if self.study.mlflow_runs:  # the experiment's runs, not its first page
            lines.append(f"its runs: {self.study.mlflow_runs}")
        prefect_run = self.prefect_flow_run or {}
        if prefect_run.get("ui"):
            lines.append(f"Prefect: flow run {prefect_run['name']} at {prefect_run['ui']}")
        elif prefect_run:
            lines.append(f"Prefect: flow run {prefect_run['name']} ran on Prefect's temporary "
                         "API, which ends with this command (set PREFECT_API_URL to a Prefect "
                         "server to keep its runs)")
        return lines

    def markdown(self) -> str:
        return _markdown(self.task, self.studies, self.evaluation)


def _known(cls: type, summary: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in summary.items() if k in names}


def _markdown(task: str, studies: list[StudySummary],
              evaluation: EvaluationSummary | None) -> str:
    """A run's result in Markdown: each study's best trial, the comparison table, the test, and
    the registered model."""
    lines = [f"# {task}: BitFit and full fine-tuning", ""]
    for study in studies:
        lines += study.markdown_lines()
    if evaluation:
        lines += evaluation.markdown_lines()
    return "\n".join(lines) + "\n"


Summary = RunSummary | EvaluationSummary


def typed(summary: Summary | dict[str, Any]) -> Summary:
    """A summary as its type: ``run``'s (a study's fields), or ``evaluate``'s (a table)."""
    if not isinstance(summary, dict):
        return summary
    return EvaluationSummary.of(summary) if "table" in summary else RunSummary.of(summary)


# --------------------------------------------------------------------------- printing


def summary_markdown(summary: Summary | dict[str, Any]) -> str:
    """A run's result in Markdown (``run``'s summary, or ``evaluate``'s comparison): each
    study's best trial, the comparison table, the test, and the registered model."""
    return typed(summary).markdown()


def pareto_text(study: StudySummary | dict[str, Any]) -> str:
    """The study's Pareto front of score against trainable parameters, in a line."""
    return (study if isinstance(study, StudySummary) else StudySummary.of(study)).pareto_text()


def print_report(summary: EvaluationSummary | dict[str, Any]) -> None:
    """The comparison table, the test, and how to use the best artifact."""
    evaluation = summary if isinstance(summary, EvaluationSummary) else EvaluationSummary.of(
        summary)
    print("\n".join(evaluation.lines()))


def print_summary(summary: RunSummary | dict[str, Any]) -> None:
    """The studies' best trials, the comparison, and where MLflow shows it all."""
    print("\n".join((summary if isinstance(summary, RunSummary)
                     else RunSummary.of(summary)).lines()))
