from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path

import pytest
import torch

from bitfit.artifacts import TENSORS
from bitfit.compare import best_config, compare
from bitfit.space import load_space
from bitfit.study import run_study
from bitfit.tracking import Tracker
from bitfit.train import TrainConfig
from tests.conftest import TINY


@pytest.mark.slow
def test_final_runs_match_mlflow_and_the_recipe_predicts(base, cola_small, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", home=tmp_path)
    configs = {"bitfit": TrainConfig(subset="qm2", epochs=2, learning_rate=5e-3),
               "full": TrainConfig(method="full", epochs=2, learning_rate=5e-5)}

    comparison = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="t",
                         tracker=tracker, processes=2, log=lambda line: None)

    assert len(comparison.runs) == 4
    for run in comparison.runs:
        logged = tracker.client.get_run(run.run_id)
        assert logged.data.tags["mlflow.parentRunId"] == comparison.parent_run_id
        assert logged.data.metrics["dev_mcc"] == run.metrics["mcc"]
        assert logged.data.metrics["dev_accuracy"] == run.metrics["accuracy"]
        history = tracker.client.get_metric_history(run.run_id, "validation_mcc")
        assert [m.value for m in history] == run.curve and len(run.curve) == 2
    for name in ("report.md", "comparison.parquet", "dev_per_seed.png", "learning_curves.png"):
        assert (comparison.folder / name).is_file()
    parent = {a.path for a in tracker.client.list_artifacts(comparison.parent_run_id)}
    assert {"report.md", "comparison.csv", "comparison.parquet", "dev_per_seed.png"} <= parent
    evaluation = tracker.client.get_run(comparison.parent_run_id)
    assert evaluation.data.tags["mlflow.note.content"] == (comparison.folder / "report.md"
                                                           ).read_text()
    assert {i.dataset.name for i in evaluation.inputs.dataset_inputs} == {"cola-train",
                                                                          "cola-validation"}
    # the best BitFit seed, registered: its run holds the model
    best = max((r for r in comparison.runs if r.method == "bitfit"), key=lambda r: r.metrics["mcc"])
    assert comparison.registered_model == "models:/bitfit-cola@champion"
    version = tracker.client.get_model_version_by_alias("bitfit-cola", "champion")
    assert version.run_id == best.run_id
    mean = sum(r.metrics["mcc"] for r in comparison.runs if r.method == "bitfit") / 2
    assert f"| bitfit | 2 | {mean:.4f}" in comparison.markdown
    # the version keeps the evaluation's figures, measured on cola_small's dev rows
    tags = version.tags
    assert float(tags["metric_mean"]) == pytest.approx(mean) and tags["seeds"] == "2"
    assert (tags["metric"], tags["eval_split"], tags["dev_rows"], tags["selected_on"]) == (
        "mcc", "validation", "96", "given")
    assert tags["dev_fingerprint"] == cola_small.fingerprints["validation"]
    assert tags["evaluation_run_id"] == comparison.parent_run_id
    assert comparison.registration is not None and comparison.registration.won

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(comparison.recipe(), {})  # the recipe exactly as the report prints it
    assert set(eval(out.getvalue())) <= {"acceptable", "unacceptable"}


@pytest.mark.slow
def test_same_seeds_same_numbers(base, cola_small, tmp_path):
    configs = {"bitfit": TrainConfig(epochs=1, precision="fp32")}
    first = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="a",
                    processes=1, log=lambda line: None)
    second = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="b",
                     processes=1, log=lambda line: None)

    assert [r.metrics for r in first.runs] == [r.metrics for r in second.runs]


@pytest.mark.slow
def test_processes_change_only_the_wall_time(base, cola_small, tmp_path):
    configs = {"bitfit": TrainConfig(subset="qm2", epochs=1, learning_rate=5e-3),
               "full": TrainConfig(method="full", epochs=1, learning_rate=5e-5)}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what each of 2 processes gets
    try:
        alone = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="one",
                        processes=1, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    together = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="two",
                       processes=2, log=lambda line: None)

    assert [(r.method, r.seed) for r in together.runs] == [(r.method, r.seed) for r in alone.runs]
    assert [r.metrics for r in together.runs] == [r.metrics for r in alone.runs]
    assert [r.curve for r in together.runs] == [r.curve for r in alone.runs]
    for a, b in zip(alone.runs, together.runs, strict=True):
        if a.artifact:
            assert (Path(a.artifact) / TENSORS).read_bytes() == \
                (Path(b.artifact) / TENSORS).read_bytes()
    with pytest.raises(ValueError, match="processes must be 1 or more, got 0"):
        compare(base, cola_small, configs, seeds=1, home=tmp_path, name="zero", processes=0)


def test_best_config_is_read_back_from_the_study(base, cola_small, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    outcome = run_study(base, cola_small, load_space(TINY), storage=storage,
                        study_name="s", home=tmp_path, n_trials=2, log=lambda line: None)

    config = best_config(storage, "s")

    assert config.learning_rate == outcome.study.best_params["learning_rate"]
    assert config.subset == outcome.study.best_params["subset"]
    assert dataclasses.asdict(config)["epochs"] == 1
    with pytest.raises(ValueError, match="no study named 'nope'"):
        best_config(storage, "nope")


@pytest.mark.slow
def test_rand_and_frozen_baselines_take_the_bitfit_config(base, cola_small, tmp_path):
    bitfit = TrainConfig(subset="qm2", epochs=1)
    configs = {"bitfit": bitfit, "rand": dataclasses.replace(bitfit, method="rand"),
               "frozen": dataclasses.replace(bitfit, method="frozen")}

    comparison = compare(base, cola_small, configs, seeds=1, home=tmp_path, name="x",
                         processes=1, log=lambda line: None)

    params = {r.method: r.trainable_params for r in comparison.runs}
    head = 384 * 2 + 2
    assert params == {"bitfit": 6 * (384 + 1536) + head, "rand": 6 * (384 + 1536) + head,
                      "frozen": head}
    assert "| rand | 1 |" in comparison.markdown and "| frozen | 1 |" in comparison.markdown


def test_the_verdict_pairs_seeds_and_is_not_testable_below_the_majority_class():
    from scipy import stats

    from bitfit.compare import comparison_verdict
    from bitfit.report import SeedRun

    def runs(method, scores):
        return [SeedRun(method, seed, {"mcc": v}, {}, [v], 1, 0.1, 4, 400, 1.0, 1.0)
                for seed, v in enumerate(scores)]

    bitfit, full = [0.20, 0.18, 0.22], [0.21, 0.18, 0.22]
    verdict = comparison_verdict(runs("bitfit", bitfit) + runs("full", full), "mcc", 0.0)
    diffs = [b - f + 0.03 for b, f in zip(bitfit, full, strict=True)]  # MCC's margin: 0.03
    assert verdict.p_value == pytest.approx(
        stats.ttest_1samp(diffs, 0, alternative="greater").pvalue)
    assert verdict.verdict == "holds"
    flat = comparison_verdict(runs("bitfit", [0.0, 0.0, 0.0]) + runs("full", [0.0, 0.01, 0.0]),
                              "mcc", 0.0)
    assert flat.verdict == "not testable" and "majority class" in flat.note
    assert comparison_verdict(runs("bitfit", bitfit), "mcc", 0.0) is None


def _children(tracker, parent_id, status):
    return sorted((r.data.tags["method"], int(r.data.tags["seed"]))
                  for r in tracker.client.search_runs(
                      [tracker.client.get_run(parent_id).info.experiment_id],
                      filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
                  if r.info.status == status)


def test_an_interrupted_evaluation_resumes_with_only_the_seeds_it_lacked(base, cola_small,
                                                                        tmp_path, monkeypatch):
    import bitfit.compare as compare_module
    from bitfit.resume import finished_seeds

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", home=tmp_path)
    short = TrainConfig(max_steps=2, batch_size=8, train_eval_samples=0)  # seconds a seed
    configs = {"bitfit": dataclasses.replace(short, subset="qm2", learning_rate=5e-3),
               "full": dataclasses.replace(short, method="full", learning_rate=5e-5)}
    trained, lines = [], []
    real_train, real_end = compare_module._train_seed, Tracker.end_seed_run

    def counted(base, data, label, config, *args):
        if (label, config.learning_rate) == ("bitfit", 1e-3):  # the changed config's first
            raise KeyboardInterrupt
        trained.append((label, config.seed))
        return real_train(base, data, label, config, *args)

    def cut_after_one(self, *args):  # Ctrl-C once the 2nd seed finished, before MLflow heard
        if len(trained) == 2:
            raise KeyboardInterrupt
        real_end(self, *args)

    monkeypatch.setattr(compare_module, "_train_seed", counted)
    monkeypatch.setattr(Tracker, "end_seed_run", cut_after_one)
    with pytest.raises(KeyboardInterrupt):
        compare(base, cola_small, configs, seeds=2, home=tmp_path, name="t", tracker=tracker,
                processes=1, log=lines.append)
    monkeypatch.setattr(Tracker, "end_seed_run", real_end)
    assert trained == [("bitfit", 0), ("bitfit", 1)]
    folder = tmp_path / "evaluations" / "t"
    first = {key: r.run for key, r in finished_seeds(folder, [
        ("bitfit", dataclasses.replace(configs["bitfit"], seed=s, select_best=False))
        for s in (0, 1)]).items()}
    assert list(first) == [("bitfit", 0), ("bitfit", 1)]
    # another learning rate under the same name: a folder of its own, said in a line
    changed = {**configs, "bitfit": dataclasses.replace(configs["bitfit"], learning_rate=1e-3)}
    with pytest.raises(KeyboardInterrupt):
        compare(base, cola_small, changed, seeds=2, home=tmp_path, name="t", tracker=tracker,
                processes=1, log=lines.append)
    assert lines[-1] == (f"evaluation t: {folder} was started with other settings "
                         "(bitfit.learning_rate 0.005 -> 0.001), so it is not resumed: "
                         f"starting {folder}-2")
    trained.clear()
    parent = tracker.client.search_runs(
        [tracker.experiment("bitfit-cola")], filter_string="tags.`bitfit.evaluation` = 't'")[-1]
    left = [r for r in tracker.child_runs(parent.info.experiment_id, parent.info.run_id)
            if r.data.tags["method"] == "full"][0]
    tracker.client.update_run(left.info.run_id, status="RUNNING")  # as a SIGKILL leaves it

    comparison = compare(base, cola_small, configs, seeds=2, home=tmp_path, name="t",
                         tracker=tracker, processes=1, log=lines.append)

    assert trained == [("full", 0), ("full", 1)]  # exactly the seeds it lacked
    assert "resuming evaluation t: 2 of 4 seeds done, training 2" in lines
    assert comparison.folder == folder
    assert sorted(p.name for p in folder.parent.iterdir()) == ["t", "t-2"]
    assert [(r.method, r.seed) for r in comparison.runs] == [
        ("bitfit", 0), ("bitfit", 1), ("full", 0), ("full", 1)]
    assert [r.metrics for r in comparison.runs[:2]] == [r.metrics for r in first.values()]
    assert "| bitfit | 2 |" in comparison.markdown and "| full | 2 |" in comparison.markdown
    assert comparison.verdict is not None
    parents = tracker.client.search_runs([comparison.experiment_id],
                                         filter_string="tags.`bitfit.kind` = 'evaluation'")
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]  # t and t-2
    assert comparison.parent_run_id == parent.info.run_id
    assert tracker.client.get_run(comparison.parent_run_id).info.status == "FINISHED"
    assert _children(tracker, comparison.parent_run_id, "FINISHED") == [
        ("bitfit", 0), ("bitfit", 1), ("full", 0), ("full", 1)]
    assert _children(tracker, comparison.parent_run_id, "RUNNING") == []
    # bitfit seed 1 finished but its run was cut before MLflow heard: made from its record
    assert _children(tracker, comparison.parent_run_id, "KILLED") == [
        ("bitfit", 1), ("full", 0), ("full", 1)]
    restored = tracker.client.get_run(comparison.runs[1].run_id)
    assert restored.data.metrics["dev_mcc"] == comparison.runs[1].metrics["mcc"]
    assert [m.value for m in tracker.client.get_metric_history(
        restored.info.run_id, "validation_mcc")] == comparison.runs[1].curve
    best = max(comparison.runs[:2], key=lambda r: r.metrics["mcc"])
    version = tracker.client.get_model_version_by_alias("bitfit-cola", "champion")
    assert version.run_id == best.run_id


@pytest.mark.slow
def test_side_by_side_processes_resume_from_the_records_their_seeds_wrote(base, cola_small,
                                                                         tmp_path):
    SEEDS = 6  # noqa: N806 - more than the 2 running and the 1 queued when it is cut
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", home=tmp_path)
    configs = {"bitfit": TrainConfig(subset="qm2", max_steps=2, batch_size=8,
                                     train_eval_samples=0, learning_rate=5e-3)}
    lines: list[str] = []

    def stop(done, total):  # Ctrl-C once the first seed is reported
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(base, cola_small, configs, seeds=SEEDS, home=tmp_path, name="p",
                tracker=tracker, processes=2, log=lines.append, progress=stop)
    folder = tmp_path / "evaluations" / "p"
    records = sorted((folder / "seeds").glob("*.json"))
    tensors = {p.stem: (folder / p.stem / TENSORS).stat().st_mtime_ns for p in records}
    # the seeds in flight when the first is reported (two running, one queued) may finish and
    # write their records too; the rest are cancelled, so at least 2 are left to the resume
    assert 1 <= len(records) <= SEEDS - 2, [p.name for p in records]
    lines.clear()

    comparison = compare(base, cola_small, configs, seeds=SEEDS, home=tmp_path, name="p",
                         tracker=tracker, processes=2, log=lines.append)

    assert lines[0] == (f"resuming evaluation p: {len(records)} of {SEEDS} seeds done, "
                        f"training {SEEDS - len(records)}")
    assert len([line for line in lines if line.startswith("final ")]) == SEEDS - len(records)
    for stem, stamp in tensors.items():  # read back, not trained again
        assert (folder / stem / TENSORS).stat().st_mtime_ns == stamp
    assert comparison.folder == folder and [p.name for p in folder.parent.iterdir()] == ["p"]
    assert [r.seed for r in comparison.runs] == list(range(SEEDS))
    assert f"| bitfit | {SEEDS} |" in comparison.markdown
    assert _children(tracker, comparison.parent_run_id, "FINISHED") == [
        ("bitfit", seed) for seed in range(SEEDS)]
    assert tracker.client.get_run(comparison.parent_run_id).info.status == "FINISHED"
