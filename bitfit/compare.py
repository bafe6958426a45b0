"""The final evaluation: each study's best configuration trained with several seeds and compared.

The best configuration of a study is read from its storage (each trial keeps its resolved
config). Every (method, seed) trains on the whole training split and is scored on GLUE dev after
its last epoch: nothing is selected on dev. The comparison (``bitfit.report``) is written under the
run home and, with a tracker, to MLflow: a parent run per evaluation, a child per method and seed.
The same evaluation called again after an interruption goes on in its folder and parent run and
trains only the seeds it lacks (``bitfit.resume``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from bitfit.artifacts import TENSORS
from bitfit.champion import Registration, Standing
from bitfit.data import TEST_SPLIT, TaskData
from bitfit.interrupts import is_interruption
from bitfit.models import BaseModel
from bitfit.methods import method
from bitfit.metrics import constant_score
from bitfit.pool import (MAX_PROCESSES, NOT_STARTED, default_processes,
                         in_processes, worker_state)
from bitfit.report import SeedRun, markdown, plot_curves, plot_seeds, summarise
from bitfit.resume import Opened, SeedRecord, finish, finished_seeds, identity, open_folder
from bitfit.studies import best_config
from bitfit.tracker import TrackerProtocol, or_no_tracker
from bitfit.train import TrainConfig, TrainResult, epochs_of, train
from bitfit.verdicts import Verdict, competitive

# the pool's names and best_config, imported from here before they had their own modules
__all__ = ["MAX_PROCESSES", "NOT_STARTED", "Comparison", "best_config",
           "compare", "comparison_verdict", "default_processes", "in_processes",
           "trade_off_markdown", "verdict_markdown", "worker_state"]


@dataclass
class Comparison:
    runs: list[SeedRun]
    markdown: str
    verdict: Verdict | None  # BitFit against full fine-tuning, where both ran
    majority: float  # the main metric of always predicting the majority class
    folder: Path
    parent_run_id: str | None
    best_artifact: str | None
    pairs: bool = False  # the task reads two texts
    test_markdown: str = ""  # the same table on the user's test file, when there is one
    experiment_id: str | None = None
    registered_model: str | None = None  # the new version's models:/ URI (Registration.uri)
    registration: Registration | None = None  # the new version and whether it is champion

    def recipe(self) -> str:
        """How to use the best BitFit run's artifact on new sentences."""
        if not self.best_artifact:
            return ""
        examples = ('[("A man is playing a guitar.", "A man plays music."), '
                    '("A man is playing a guitar.", "A woman is cooking.")]' if self.pairs else
                    '["The cat sat on the mat.", "Mat the on sat cat."]')
        return ("from bitfit.artifacts import Predictor\n"
                f"predict = Predictor({self.best_artifact!r})\n"
                f"print(predict({examples}))")


def compare(
    base: BaseModel,
    data: TaskData,
    configs: dict[str, TrainConfig],
    *,
    seeds: int,
    home: str | os.PathLike[str],
    name: str,
    tracker: TrackerProtocol | None = None,
    experiment: str | None = None,
    device: str = "auto",
    processes: int | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    register: bool = True,
    promote: bool = False,
    selected_on: str = "given",
    plots: bool = True,
) -> Comparison:
    """Train each method's config with seeds 0..seeds-1 and compare them on dev.

    Args:
        base: the loaded base model; data: the whole training split and the dev split(s).
        configs: a config per method label, e.g. ``{"bitfit": ..., "full": ...}``; seeds: how
            many seeds per method.
        home: the run home; results go to ``<home>/evaluations/<name>``, or ``<name>-2``, ...:
            an unfinished folder of the same evaluation goes on in its parent run, only the
            seeds it lacks training (``bitfit.resume``); a finished one is kept.
        name: the evaluation's name.
        tracker: a ``tracking.Tracker``; None records nothing.
        experiment: MLflow experiment (default: bitfit-<task>); device: training device.
        processes: runs trained at once, each in its own process with an equal share of the
            cores (None: ``default_processes``; 1: one after another in this process); it
            changes only the wall time and, through the threads, the last bits of sums.
        log: where progress lines go.
        progress: called with (runs done, runs) after each run.
        register: register the best BitFit seed as a version of ``bitfit-<task>`` (champion
            where it wins, ``bitfit.champion``, or with ``promote``).
        selected_on: the split the configs were chosen on (``heldout``, ``dev``; ``given``);
        plots: draw the per-seed and learning-curve plots (a reproduction draws its own).
    """
    if processes is not None and processes < 1:
        raise ValueError(f"processes must be 1 or more, got {processes}")
    tracker = or_no_tracker(tracker)
    jobs = [(label, dataclasses.replace(config, seed=seed, select_best=False))
            for label, config in configs.items() for seed in range(seeds)]
    folder, experiment_id, parent_id, done = _open_evaluation(
        base, data, configs, jobs, seeds=seeds, home=Path(home), name=name, tracker=tracker,
        experiment=experiment or tracker.task_experiment(data.task.name), log=log)
    runs = _run_jobs(base, data, jobs, done, tracker=tracker, experiment_id=experiment_id,
                     parent_id=parent_id, folder=folder, device=device, processes=processes,
                     log=log, progress=progress)
    best_run = _best_bitfit(runs, data.task.main_metric)
    comparison = _write_comparison(runs, data, folder, best_run, plots=plots,
                                   parent_id=parent_id, experiment_id=experiment_id)
    if parent_id is not None:
        standing = _standing(runs, data, configs, selected_on, parent_id) if register else None
        comparison = _end_evaluation(tracker, comparison, best_run, standing, promote=promote)
    finish(folder)
    return comparison


def _standing(runs: list[SeedRun], data: TaskData, configs: dict[str, TrainConfig],
              selected_on: str, parent_id: str) -> Standing | None:
    """The BitFit seeds' standing: their mean main metric, on the evaluation split's rows."""
    task, split = data.task, data.selection_split
    values = [r.metrics[task.main_metric] for r in runs if r.method == "bitfit"]
    if not values:
        return None
    # a TaskData made by hand has no fingerprint of its rows: their tokens stand in for them
    rows = data.fingerprints.get(split) or f"tokens-{data.evals[split].digest()}"
    bitfit = configs.get("bitfit")
    train_rows = min(bitfit.train_samples or len(data.train), len(data.train)) if bitfit else None
    return Standing.of(values, basis={
        "task": task.name, "metric": task.main_metric, "eval_split": split,
        "dev_rows": len(data.evals[split]), "dev_fingerprint": rows,
        "selected_on": selected_on}, evaluation_run_id=parent_id, train_rows=train_rows)


def _open_evaluation(base: BaseModel, data: TaskData, configs: dict[str, TrainConfig],
                     jobs: list[tuple[str, TrainConfig]], *, seeds: int, home: Path, name: str,
                     tracker: TrackerProtocol, experiment: str, log: Callable[[str], None]
                     ) -> tuple[Path, str | None, str | None, dict[tuple[str, int], SeedRecord]]:
    """The evaluation's folder, experiment and parent run, and the seeds it has finished: the
    unfinished folder of the same evaluation goes on, else a new one (never another's)."""
    opened = open_folder(home / "evaluations", name, identity(base, data, configs, seeds), log)
    experiment_id = tracker.experiment(experiment)
    parent_id = _evaluation_run(tracker, experiment_id, opened, data, configs, seeds)
    done = finished_seeds(opened.folder, jobs)
    if opened.resumed:
        log(f"resuming evaluation {opened.folder.name}: {len(done)} of {len(jobs)} seeds done, "
            f"training {len(jobs) - len(done)}")
    return opened.folder, experiment_id, parent_id, done


def _evaluation_run(tracker: TrackerProtocol, experiment_id: str | None, opened: Opened,
                    data: TaskData, configs: dict[str, TrainConfig], seeds: int) -> str | None:
    """The evaluation's parent run, with its settings and data: the earlier call's when it
    resumes (``Tracker.evaluation_run``)."""
    parent_id = tracker.evaluation_run(experiment_id, opened.folder.name, {
        "seeds": seeds, "task": data.task.name, "eval_split": data.selection_split,
        "train_examples": len(data.train),
        **{f"{label}.{k}": v for label, c in configs.items()
           for k, v in dataclasses.asdict(c).items()}}, key=opened.run_key,
        resume=opened.resumed)
    if not opened.resumed:
        tracker.log_data(parent_id, data, {"train": "training",
                                           **{s: "evaluation" for s in data.evals}})
    return parent_id


def _run_jobs(base: BaseModel, data: TaskData, jobs: list[tuple[str, TrainConfig]],
              done: dict[tuple[str, int], SeedRecord], *, tracker: TrackerProtocol,
              experiment_id: str | None, parent_id: str | None, folder: Path, device: str,
              processes: int | None, log: Callable[[str], None],
              progress: Callable[[int, int], None] | None) -> list[SeedRun]:
    """Train every (method, seed) job that ``done`` lacks, each recorded as a child run, and
    read back those it holds; the runs in the jobs' order. On any error or interruption the
    runs not finished and the parent are stopped."""
    todo = [(label, c) for label, c in jobs if (label, c.seed) not in done]
    workers = processes if processes is not None else default_processes(device, len(todo))
    main = data.task.main_metric
    finished: dict[tuple[str, int], SeedRun] = {}
    run_ids: list[str] = []
    trained, results = 0, None
    try:
        # a resumed evaluation's runs: the finished kept, those a killed process left RUNNING
        # ended, before this call's own start
        logged = tracker.resume_seed_runs(experiment_id, parent_id)
        for (label, seed), record in done.items():
            finished[(label, seed)] = _restored(tracker, experiment_id, parent_id, folder,
                                                record, logged)
        # a run not recorded has the id "" in runs.json
        run_ids = [tracker.seed_run(experiment_id, parent_id, label, c.seed, c) or ""
                   for label, c in todo]
        results = _train_all(base, data, todo, run_ids, folder, device, workers)
        for (label, config), run_id, (result, seed_run) in zip(todo, run_ids, results,
                                                               strict=True):
            finished[(label, config.seed)] = seed_run
            if run_id:
                tracker.end_seed_run(run_id, result.evaluations, seed_run,
                                     seed_run.artifact or None)
            trained += 1  # its run ended
            log(f"final {len(finished)} of {len(jobs)}: {label} seed {config.seed}: dev "
                f"{main} {seed_run.metrics[main]:.4f}")
            if progress is not None:
                progress(len(finished), len(jobs))
    except BaseException as err:  # no run is left RUNNING in MLflow
        if results is not None:  # side-by-side processes stop now, not when it is collected
            results.close()
        status = "KILLED" if is_interruption(err) else "FAILED"
        for stopped in [*run_ids[trained:], parent_id]:
            if stopped:
                tracker.stop_run(stopped, status)
        raise
    return [finished[(label, c.seed)] for label, c in jobs]


def _restored(tracker: TrackerProtocol, experiment_id: str | None, parent_id: str | None,
              folder: Path, record: SeedRecord, logged: set[str]) -> SeedRun:
    """A seed an earlier call finished, read back: its child run is kept where it finished
    under this parent (``logged``), else (the call stopped before recording it) made now from
    the record."""
    seed_run = record.run
    if seed_run.run_id in logged:
        return seed_run
    config = TrainConfig(**record.config)
    run_id = tracker.seed_run(experiment_id, parent_id, seed_run.method, seed_run.seed, config)
    if not run_id:
        return seed_run
    seed_run = dataclasses.replace(seed_run, run_id=run_id)
    tracker.end_seed_run(run_id, record.evaluations, seed_run, seed_run.artifact or None)
    dataclasses.replace(record, run=seed_run).save(folder)
    return seed_run


def _best_bitfit(runs: list[SeedRun], main: str) -> SeedRun | None:
    """The BitFit seed with the best dev score among those that wrote an artifact."""
    bitfit_runs = [r for r in runs if r.artifact and r.method == "bitfit"]
    return max(bitfit_runs, key=lambda r: r.metrics[main]) if bitfit_runs else None


def _write_comparison(runs: list[SeedRun], data: TaskData, folder: Path,
                      best_run: SeedRun | None, *, plots: bool, parent_id: str | None,
                      experiment_id: str | None) -> Comparison:
    """Summarise the runs, judge BitFit against full fine-tuning, and write the report,
    tables, runs and plots under ``folder``."""
    task, split = data.task, data.selection_split
    table = summarise(runs, task.metrics)
    main = task.main_metric
    majority = constant_score(task, data.train.labels, data.evals[split].labels)
    verdict = comparison_verdict(runs, main, majority)
    text = markdown(table, task.metrics)
    test = "\n\n".join(t for t in (verdict_markdown(verdict, main, majority) if verdict else "",
                                    trade_off_markdown(table, main)) if t)
    best = best_run.artifact if best_run else None
    test_text = ""
    if any(r.test_metrics for r in runs):  # the user's test file: scored, never selected on
        test_text = markdown(summarise([dataclasses.replace(r, metrics=r.test_metrics)
                                        for r in runs], task.metrics), task.metrics)
    comparison = Comparison(runs, text, verdict, majority, folder, parent_id, best,
                            pairs=len(task.text_columns) == 2, test_markdown=test_text,
                            experiment_id=experiment_id)
    report = f"# {task.name}: final evaluation on {split}\n\n{text}\n\n{test}\n"
    if test_text:
        report += f"\n## On the test file\n\n{test_text}\n"
    if best:
        report += (f"\nBest BitFit seed's artifact: `{best}`\n\n"
                   f"```python\n{comparison.recipe()}\n```\n")
    (folder / "report.md").write_text(report)
    table.to_parquet(folder / "comparison.parquet")
    table.to_csv(folder / "comparison.csv", index=False)
    (folder / "runs.json").write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1))
    if plots:
        plot_seeds(runs, main, folder / "dev_per_seed.png")
        plot_curves(runs, main, folder / "learning_curves.png")
    return comparison


def _end_evaluation(tracker: TrackerProtocol, comparison: Comparison, best_run: SeedRun | None,
                    standing: Standing | None, *, promote: bool) -> Comparison:
    """Close the parent run with the results, and register the best BitFit seed (where there is
    a ``standing`` to judge it by)."""
    verdict, majority = comparison.verdict, comparison.majority
    assert comparison.parent_run_id is not None
    tracker.end_evaluation(comparison.parent_run_id, comparison.folder, {
        "finished_at": time.time(), "majority_class": majority,
        **({"p_value": verdict.p_value, "difference": verdict.estimate} if verdict else {})},
        tags={"verdict": verdict.verdict} if verdict else {})
    if standing is not None and best_run is not None and best_run.run_id:
        main = standing.metric
        registration = tracker.register(
            best_run.run_id, best_run.artifact, standing.basis["task"], standing=standing,
            promote=promote,
            description=f"evaluation {comparison.folder.name}, seed {best_run.seed}: dev {main} "
            f"{best_run.metrics[main]:.4f}; mean over {standing.seeds} seeds "
            f"{standing.mean:.4f}")
        if registration is not None:
            comparison = dataclasses.replace(comparison, registration=registration,
                                             registered_model=registration.uri)
    return comparison


def comparison_verdict(runs: list[SeedRun], metric: str, majority: float) -> Verdict | None:
    """Whether BitFit is competitive with full fine-tuning on ``metric`` (``verdicts.competitive``:
    non-inferior within the metric's declared margin, tested where full fine-tuning beats the
    majority class), paired by seed where both methods ran the same seeds (each seed trains both
    on the same rows). None unless both methods ran."""
    by = {label: {r.seed: r.metrics[metric] for r in runs if r.method == label}
          for label in ("bitfit", "full")}
    if not by["bitfit"] or not by["full"]:
        return None
    paired = by["bitfit"].keys() == by["full"].keys()
    seeds = sorted(by["bitfit"])
    ours = [by["bitfit"][s] for s in seeds]
    theirs = [by["full"][s] for s in (seeds if paired else sorted(by["full"]))]
    return competitive(ours, theirs, metric=metric, floor=majority, paired=paired,
                       names=("bitfit", "full"))


def trade_off_markdown(table, metric: str) -> str:
    """Which methods are on the Pareto front of mean dev score against trainable parameters."""
    from bitfit.report import pareto_front

    if len(table) < 2:
        return ""
    points = list(zip(table["trainable_params"], table[f"{metric}_mean"], strict=True))
    front = pareto_front(points)
    names = [f"{table['method'].iloc[i]} ({int(points[i][0]):,} parameters, "
             f"{points[i][1]:.4f})" for i in sorted(front, key=lambda i: points[i][0])]
    return (f"Pareto front of dev {metric} against trainable parameters (no other method "
            f"scores higher with as many or fewer): {'; '.join(names)}.")


def verdict_markdown(verdict: Verdict, metric: str, majority: float) -> str:
    """The verdict in a sentence or two, with its rule."""
    interval = ("" if math.isnan(verdict.low) else
                f", 90% interval [{verdict.low:+.4f}, {verdict.high:+.4f}]")
    p = "" if math.isnan(verdict.p_value) else f", p = {verdict.p_value:.4f}"
    return (f"**BitFit is competitive with full fine-tuning on dev {metric}: {verdict.verdict}.** "
            f"bitfit - full = {verdict.estimate:+.4f}{interval}{p}. Rule: {verdict.rule}; the "
            f"margin is declared per metric before any run (bitfit.verdicts.MARGINS); the "
            f"majority class scores {majority:.4f}, and a reference that does not beat it "
            "makes the claim not testable." + (f" {verdict.note}." if verdict.note else ""))


def _train_all(base: BaseModel, data: TaskData, jobs: list[tuple[str, TrainConfig]],
               run_ids: list[str], folder: Path, device: str, processes: int
               ) -> Generator[tuple[TrainResult, SeedRun], None, None]:
    """Each job's result, in the jobs' order."""
    if processes <= 1 or len(jobs) <= 1:
        for (label, config), run_id in zip(jobs, run_ids, strict=True):
            yield _train_seed(base, data, label, config, folder, device, run_id)
        return
    yield from in_processes(base, data, processes, [
        (_worker_job, (label, config, folder, device, run_id))
        for (label, config), run_id in zip(jobs, run_ids, strict=True)])


def _worker_job(label: str, config: TrainConfig, folder: Path, device: str, run_id: str
                ) -> tuple[TrainResult, SeedRun]:
    result, seed_run = _train_seed(*worker_state(), label, config, folder, device, run_id)
    # the model and the trained tensors stay here: the artifact is already on disk
    return dataclasses.replace(result, extra={}, trained={}, rand_masks={}), seed_run


def _train_seed(base: BaseModel, data: TaskData, label: str, config: TrainConfig,
                folder: Path, device: str, run_id: str = "") -> tuple[TrainResult, SeedRun]:
    """Train one (method, seed), write its artifact and then its record (``resume``): a seed
    that finished is never trained again, even when this process is stopped before it is
    reported."""
    task, split = data.task, data.selection_split
    result = train(base, data, config, device=device, progress=False)
    if result.status != "completed":
        raise RuntimeError(f"{label} seed {config.seed} {result.status}: {result.message}")
    out = folder / f"{label}-seed{config.seed}"
    artifact_bytes = 4 * result.trainable_params
    artifact = ""
    if method(config.method).writes_artifact:  # a full model is a checkpoint, not an artifact
        result.save(base, task, out, extra={"data": {"max_length": data.max_length}})
        artifact_bytes = (out / TENSORS).stat().st_size
        artifact = str(out)
    seed_run = SeedRun(
        method=label, seed=config.seed, metrics=result.metrics[split],
        train_metrics=result.train_metrics,
        curve=[e.metrics[split][task.main_metric] for e in result.evaluations],
        trainable_params=result.trainable_params,
        trainable_fraction=result.trainable_fraction, artifact_bytes=artifact_bytes,
        checkpoint_bytes=4 * result.total_params,
        # completed: every step ran; a run of max_steps counts its share of an epoch
        time_per_epoch_s=result.train_time_s / epochs_of(config, min(
            config.train_samples or len(data.train), len(data.train))),
        peak_memory_mb=result.peak_memory_mb, run_id=run_id, artifact=artifact,
        test_metrics=result.metrics.get(TEST_SPLIT, {}))
    SeedRecord(seed_run, result.evaluations, dataclasses.asdict(config)).save(folder)
    return result, seed_run
