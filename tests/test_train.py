from __future__ import annotations

import numpy as np
import pytest
import torch

from bitfit.biases import select_biases
from bitfit.data import collate
from bitfit.train import (TrainConfig, configure_optimizer, resolve_precision, train, train_step,
                          trainable_tensors)


def _pristine(base):
    base.restore()
    return {n: p.detach().clone() for n, p in base.encoder.named_parameters()}


def _changed(base, before):
    return {n: (p.detach() != before[n]) for n, p in base.encoder.named_parameters()
            if not torch.equal(p.detach(), before[n])}


def test_bitfit_changes_only_the_selected_biases(base, cola_small):
    before = _pristine(base)
    result = train(base, cola_small, TrainConfig(subset="qm2", epochs=1, learning_rate=1e-2),
                   progress=False)

    selected = {n for names in select_biases(before, "bert", "qm2").values() for n in names}
    assert set(_changed(base, before)) == selected  # every other tensor bit-identical
    assert len(selected) == 12
    assert result.trainable_params == 6 * (384 + 1536) + 384 * 2 + 2
    assert set(result.trained) == {f"encoder.{n}" for n in selected} | {"head.weight",
                                                                        "head.bias"}


@pytest.mark.slow
def test_rand_trains_exactly_as_many_scalars_as_the_bias_subset(base, cola_small):
    before = _pristine(base)
    result = train(base, cola_small, TrainConfig(method="rand", subset="qm2", epochs=1,
                                                 learning_rate=1e-2), progress=False)

    k = 6 * (384 + 1536)
    changed = _changed(base, before)
    masks = {n.removeprefix("encoder."): m for n, m in result.rand_masks.items()}
    assert sum(int(m.sum()) for m in masks.values()) == k
    assert result.trainable_params == k + 384 * 2 + 2
    assert set(changed) <= set(masks)
    assert all(not (diff & ~masks[n]).any() for n, diff in changed.items())  # only masked moved
    assert sum(int(d.sum()) for d in changed.values()) > 0.9 * k


def test_frozen_trains_the_head_only(base, cola_small):
    before = _pristine(base)
    result = train(base, cola_small, TrainConfig(method="frozen", epochs=1), progress=False)

    assert _changed(base, before) == {}
    assert set(result.trained) == {"head.weight", "head.bias"}


@pytest.mark.slow
def test_lora_trains_only_its_adapters_and_leaves_the_encoder_as_it_was(base, cola_small,
                                                                        tmp_path):
    from bitfit.artifacts import apply_artifact
    from bitfit.train import predict

    before = _pristine(base)
    result = train(base, cola_small, TrainConfig(method="lora", epochs=1, learning_rate=3e-3),
                   progress=False)

    adapters = [n for n in result.trained if ".lora_" in n]
    assert len(adapters) == 6 * 2 * 2  # A and B on query and value of 6 layers
    assert all(".query." in n or ".value." in n for n in adapters)
    assert result.trainable_params == 6 * 2 * (8 * 384 + 384 * 8) + 384 * 2 + 2
    moved = [n for n, p in base.encoder.named_parameters()
             if n in before and not torch.equal(p.detach(), before[n])]
    assert moved == []  # the pre-trained tensors themselves never move
    model = result.extra["model"]
    trained_logits = predict(model, cola_small.evals["validation"], batch_size=64,
                             pad_id=base.tokenizer.pad_token_id, device=torch.device("cpu"))
    out = result.save(base, cola_small.task, tmp_path / "lora")
    rebuilt = apply_artifact(base, out)  # the adapters again, from the artifact
    logits = predict(rebuilt, cola_small.evals["validation"], batch_size=64,
                     pad_id=base.tokenizer.pad_token_id, device=torch.device("cpu"))
    assert np.array_equal(logits, trained_logits)
    # the next run gets the plain encoder back: no adapter left in it
    base.classifier(2, seed=0)
    assert not any(type(m).__module__.startswith("peft.") for m in base.encoder.modules())
    assert set(dict(base.encoder.named_parameters())) == set(before)


@pytest.mark.slow
def test_full_fine_tuning_trains_everything(base, cola_small):
    result = train(base, cola_small, TrainConfig(method="full", epochs=1, learning_rate=5e-5),
                   progress=False)

    assert result.trainable_params == result.total_params
    assert result.trainable_fraction == 1.0


@pytest.mark.slow
def test_same_seed_same_metrics_and_tensors(base, cola_small):
    config = TrainConfig(epochs=1, seed=7, precision="fp32")
    a = train(base, cola_small, config, progress=False)
    b = train(base, cola_small, config, progress=False)
    c = train(base, cola_small, TrainConfig(epochs=1, seed=8, precision="fp32"), progress=False)

    assert a.evaluations == b.evaluations
    assert all(torch.equal(a.trained[n], b.trained[n]) for n in a.trained)
    assert not torch.equal(a.trained["head.weight"], c.trained["head.weight"])


def test_a_callback_sees_each_evaluation_and_can_stop_the_run(base, cola_small):
    seen = []

    def stop_at_second(evaluation):
        seen.append(evaluation.step)
        return len(seen) == 2

    result = train(base, cola_small, TrainConfig(epochs=3, eval_every=2), callback=stop_at_second,
                   progress=False)

    assert seen == [2, 4]
    assert result.status == "stopped" and len(result.evaluations) == 2
    assert result.best is not None and result.best.step in (2, 4)


def test_best_evaluation_is_tracked_and_its_tensors_are_kept(base, cola_small):
    result = train(base, cola_small, TrainConfig(epochs=3, learning_rate=3e-3), progress=False)

    mains = [e.main for e in result.evaluations]
    assert len(mains) == 3 and result.best.main == max(mains)
    assert result.best.epoch == 1 + mains.index(max(mains))
    model = result.extra["model"]
    assert torch.equal(model.head.weight, result.trained["head.weight"])


def test_scoring_after_the_last_epoch_only_trains_the_same_tensors(base, cola_small):
    config = TrainConfig(epochs=2, seed=3, precision="fp32", select_best=False)
    last = train(base, cola_small, TrainConfig(**{**config.__dict__, "eval_each_epoch": False,
                                                  "train_eval_samples": 0}), progress=False)
    every = train(base, cola_small, config, progress=False)

    assert [e.epoch for e in every.evaluations] == [1.0, 2.0]
    assert [e.epoch for e in last.evaluations] == [2.0]
    assert last.evaluations[0].metrics == every.evaluations[1].metrics
    assert all(torch.equal(last.trained[n], every.trained[n]) for n in every.trained)
    assert every.train_metrics and last.train_metrics == {}
    # both epochs' training is timed, though only the second ends in an evaluation (one
    # epoch's alone would be about half)
    assert last.train_time_s > 0.75 * every.train_time_s


def test_an_exploding_loss_ends_the_run_with_a_clear_status(base, cola_small):
    result = train(base, cola_small, TrainConfig(method="full", epochs=1, learning_rate=1e30,
                                                 warmup_ratio=0.0), progress=False)

    assert result.status == "diverged"
    assert "lower the learning rate" in result.message


@pytest.mark.slow
def test_stsb_trains_a_single_regression_output(base, stsb_small):
    result = train(base, stsb_small, TrainConfig(epochs=1, eval_every=5, learning_rate=1e-2),
                   progress=False)

    assert result.extra["model"].head.out_features == 1
    assert set(result.best_metrics["validation"]) == {"pearson", "spearman"}
    losses = [e.train_loss for e in result.evaluations]
    assert losses[-1] < losses[0] / 2  # MSE against 0-5 similarity scores falls as it learns


@pytest.mark.slow
def test_bitfit_learns_sst2_from_a_small_sample(base, sst2_small):
    result = train(base, sst2_small, TrainConfig(epochs=2, learning_rate=3e-3), progress=False)

    assert result.best_metrics["validation"]["accuracy"] > 0.7
    assert 0.001 < result.trainable_fraction < 0.002  # about 0.1% of the parameters


def test_train_step_lowers_the_loss_and_moves_only_the_trained_tensors(base, cola_small):
    config = TrainConfig(subset="qm2", learning_rate=1e-2, warmup_ratio=0.0)
    names, _ = trainable_tensors(base, config)
    model = base.classifier(2, seed=0, dropout=0.0)  # no dropout: the same batch, the same loss
    base.remember(names)  # later runs restore these encoder tensors
    params = dict(model.named_parameters())
    trained = {f"encoder.{n}": params[f"encoder.{n}"].requires_grad_(True) for n in names}
    trained.update({f"head.{n}": p for n, p in model.head.named_parameters()})
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer, scheduler, _ = configure_optimizer(trained, {}, config, total_steps=100,
                                                  device=torch.device("cpu"))
    batch = collate(cola_small.train, np.arange(16), pad_id=base.tokenizer.pad_token_id or 0)
    model.train()

    losses = [train_step(model, batch, optimizer, scheduler, params=list(trained.values()),
                         max_grad_norm=1.0) for _ in range(5)]

    assert losses[-1] < losses[0]
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert changed == set(trained) and len(changed) == 12 + 2


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", -1e-3, "learning_rate must be > 0, got -0.001"),
    ("method", "adapter", "method must be one of bitfit, full, frozen, rand, lora, got "
                          "'adapter'"),
    ("lora_rank", 0, "lora_rank must be >= 1, got 0"),
    ("subset", "q+z", "unknown bias subset 'q+z'"),
    ("precision", "fp8", "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ("epochs", 0, "epochs must be >= 1, got 0"),
    ("train_eval_samples", -1, "train_eval_samples must be >= 0, got -1"),
])
def test_bad_settings_are_named_with_what_was_given(field, value, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        TrainConfig(**{field: value})


def test_explicit_precision_is_kept():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("capability, hip, expected", [
    ((7, 0), None, "fp16"), ((7, 5), None, "fp16"), ((8, 0), None, "bf16"), ((9, 0), None, "bf16"),
    ((9, 4), "6.2", "bf16"),  # an AMD GPU under ROCm
])
def test_auto_on_a_gpu_is_bf16_where_it_is_native_else_fp16(monkeypatch, capability, hip,
                                                            expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", hip)
    # torch counts emulated bf16 as support: a V100 or T4 would say True here
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    assert resolve_precision("auto", torch.device("cuda:1")) == expected
    assert resolve_precision("fp16", torch.device("cuda:1")) == "fp16"


def test_fp16_off_a_gpu_is_refused_in_one_sentence(base, cola_small):
    message = r"precision fp16 \(with loss scaling\) is for CUDA GPUs, and this run is on cpu"
    with pytest.raises(ValueError, match=message):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match=message):
        train(base, cola_small, TrainConfig(max_steps=1, precision="fp16"), device="cpu",
              progress=False)


def test_an_fp16_step_skips_an_overflowing_gradient_as_grad_scaler_does(base, cola_small):
    """fp16 with loss scaling, on a CPU (torch's GradScaler and fp16 autocast run there too): a
    step whose scaled gradients stay finite trains; one whose gradients overflow changes no
    tensor, does not advance the schedule, and halves the scale."""
    config = TrainConfig(learning_rate=1e-2, warmup_ratio=0.0)
    names, _ = trainable_tensors(base, config)
    model = base.classifier(2, seed=0, dropout=0.0)
    base.remember(names)
    params = dict(model.named_parameters())
    trained = {f"encoder.{n}": params[f"encoder.{n}"].requires_grad_(True) for n in names}
    trained.update({f"head.{n}": p for n, p in model.head.named_parameters()})
    optimizer, scheduler, _ = configure_optimizer(trained, {}, config, total_steps=100,
                                                  device=torch.device("cpu"))
    batch = collate(cola_small.train, np.arange(16), pad_id=base.tokenizer.pad_token_id or 0)
    model.train()

    def step(scale: float) -> tuple[set[str], float]:
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        before = {n: p.detach().clone() for n, p in trained.items()}
        loss = train_step(model, batch, optimizer, scheduler, params=list(trained.values()),
                          max_grad_norm=1.0, precision="fp16", scaler=scaler)
        assert np.isfinite(loss)
        return {n for n, p in trained.items() if not torch.equal(p, before[n])}, \
            scaler.get_scale()

    changed, scale = step(2.0**4)
    assert changed == set(trained) and scale == 2.0**4 and scheduler.last_epoch == 1
    changed, scale = step(2.0**40)  # fp16 gradients of 1e12 times the loss's: infinite
    assert changed == set() and scale == 2.0**39 and scheduler.last_epoch == 1
    assert all(p.grad is None for p in trained.values())


def test_bf16_with_the_frozen_weights_cast_once_trains_exactly_as_autocast_alone(
        base, cola_small, monkeypatch):
    """BitFit at bf16 holds its frozen weight matrices in bf16 for the run; autocast would cast
    them on every call to the very same values, so nothing trained may differ by a bit, and the
    encoder's own fp32 weights are back afterwards."""
    import contextlib

    from bitfit import train as train_module
    from bitfit.train import frozen_weights_in as cast_once

    weights = {n: p.detach().clone() for n, p in base.encoder.named_parameters()
               if n.endswith(".weight")}
    config = TrainConfig(epochs=1, seed=3, precision="bf16")
    once = train(base, cola_small, config, progress=False)
    monkeypatch.setattr(train_module, "frozen_weights_in",
                        lambda model, dtype: contextlib.nullcontext())
    every_call = train(base, cola_small, config, progress=False)

    assert once.evaluations == every_call.evaluations
    assert all(torch.equal(once.trained[n], every_call.trained[n]) for n in once.trained)
    after = dict(base.encoder.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], w)
               for n, w in weights.items())
    model = once.extra["model"]
    model.head.weight.requires_grad_(True)  # a matrix that trains keeps its own dtype
    with cast_once(model, torch.bfloat16):
        assert model.encoder.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
        assert model.head.weight.dtype == torch.float32
    model.head.weight.requires_grad_(False)
    assert model.encoder.encoder.layer[0].attention.self.query.weight.dtype == torch.float32


@pytest.mark.parametrize("warmup, total", [(0, 10), (3, 30), (10, 10)])
def test_the_schedule_is_transformers_linear_warmup_step_for_step(warmup, total):
    from transformers import get_linear_schedule_with_warmup

    from bitfit.train import linear_schedule

    assert _rates(lambda o: linear_schedule(o, warmup, total), total) == _rates(
        lambda o: get_linear_schedule_with_warmup(o, warmup, total), total)


def _rates(make, total):
    """The learning rate at each of ``total`` + 2 steps of the scheduler ``make(optimizer)``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make(optimizer)
    seen = []
    for _ in range(total + 2):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("warmup, total", [(0, 10), (3, 30), (10, 10)])
def test_the_constant_schedule_is_transformers_constant_after_warmup(warmup, total):
    from transformers import get_constant_schedule_with_warmup

    from bitfit.train import linear_schedule

    ours = _rates(lambda o: linear_schedule(o, warmup, total, decay=False), total)
    assert ours == _rates(lambda o: get_constant_schedule_with_warmup(o, warmup), total)


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_the_summed_learning_rate_is_what_the_scheduler_hands_out(schedule):
    from bitfit.train import lr_sum

    config = TrainConfig(learning_rate=2e-3, max_steps=37, warmup_ratio=0.2, schedule=schedule)
    trained = {"head.bias": torch.zeros(2, requires_grad=True)}
    optimizer, scheduler, _ = configure_optimizer(trained, {}, config, total_steps=37,
                                                  device=torch.device("cpu"))
    handed = 0.0
    for _ in range(37):
        handed += optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert lr_sum(config, train_rows=1000) == pytest.approx(handed)


def test_a_step_budget_runs_that_many_steps_across_epochs_and_scores_the_last(base, cola_small):
    # 160 rows at batch 32: 5 steps an epoch, so 12 steps end inside the third epoch
    seen = []
    result = train(base, cola_small, TrainConfig(max_steps=12, batch_size=32, epochs=1,
                                                 learning_rate=1e-3, eval_every=5),
                   callback=lambda e: seen.append(e.step), progress=False)
    assert result.status == "completed"
    assert seen == [5, 10, 12]  # each epoch's end (= every 5 steps) and the last step
    assert result.evaluations[-1].epoch == pytest.approx(12 / 5)


def test_each_seed_trains_on_its_own_sample_and_methods_share_it(base, cola_small):
    from bitfit.train import seed_sample

    def rows(seed: int, method: str = "bitfit"):
        config = TrainConfig(method=method, train_samples=100, seed=seed)
        return seed_sample(cola_small, config).train

    first, again, other = rows(0), rows(0, "full"), rows(1)
    assert len(first) == 100
    assert np.array_equal(first.ids, again.ids)  # same seed, another method: the same rows
    assert not np.array_equal(first.ids, other.ids)
    whole = seed_sample(cola_small, TrainConfig(train_samples=10_000)).train
    assert whole is cola_small.train  # asking for more rows than there are keeps them all
