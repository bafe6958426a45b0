"""The optimiser, its schedule and one training step, for ``train`` and for a loop of one's own
(``benchmarks/step_time.py`` times the step); and the frozen weights held in bf16 meanwhile."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.hooks import RemovableHandle

from bitfit.hardware import half_dtype, take_free_cores
from bitfit.models import TextClassifier
from bitfit.trainconfig import TrainConfig


def configure_optimizer(
    trained: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    config: TrainConfig,
    *,
    total_steps: int,
    device: torch.device,
) -> tuple[torch.optim.AdamW, LambdaLR, list[RemovableHandle]]:
    """AdamW over the trained tensors: a linear warmup over ``warmup_ratio`` of ``total_steps``,
    then linear decay to 0 at ``total_steps`` or (``schedule`` constant) the rate held.

    Weight decay applies to matrices only, and not to rand's masked ones. For rand, gradient hooks
    mask each tensor's gradient; the caller removes them (``handle.remove()``) when it is done.

    Args:
        trained: the trained tensors by name in the classifier (``encoder.…``, ``head.…``).
        masks: rand's 0/1 masks by encoder tensor name, on the tensors' device; empty otherwise.
        config: learning rate, weight decay, warmup ratio and schedule.
        total_steps: optimiser steps of the whole run.
        device: where the tensors are (AdamW's fused kernels exist for CPU and CUDA).
    """
    hooks = []
    for n, m in masks.items():
        # Only the chosen scalars get a gradient; with no weight decay on these tensors AdamW
        # then leaves every other scalar bit-identical.
        hooks.append(trained[f"encoder.{n}"].register_hook(lambda g, m=m: g * m))
    decay = [p for n, p in trained.items()
             if p.dim() >= 2 and n.removeprefix("encoder.") not in masks]
    no_decay = [p for p in trained.values() if all(p is not d for d in decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, fused=device.type in ("cpu", "cuda"),
    )
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total_steps), total_steps,
                                decay=config.schedule == "linear")
    return optimizer, scheduler, hooks


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    *, decay: bool = True) -> LambdaLR:
    """The learning rate rising linearly from 0 over ``warmup_steps``, then falling linearly to 0
    at ``total_steps``: transformers' ``get_linear_schedule_with_warmup``, step for step. Its
    import (``transformers.trainer_utils``, which imports PEFT when installed) made every
    command slow to start: ``python flows/search.py --help`` took 8.1 s with it, 6.7 s
    without. A run that loads the model imports most of it anyway (a one-trial search: 25.4 s
    before, 25.2 s after). Without ``decay`` the rate stays at its peak after the warmup
    (transformers' ``get_constant_schedule_with_warmup``)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if not decay:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def _loss(task_is_regression: bool, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task_is_regression:
        return F.mse_loss(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels)


def train_step(
    model: TextClassifier,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    *,
    params: list[torch.Tensor],
    max_grad_norm: float,
    precision: str = "fp32",
    regression: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One training step on one batch: forward, loss, backward, gradient clipping, then the
    optimiser and scheduler step, with the threads ``hardware.take_free_cores`` gives it.

    A NaN or infinite loss is returned before the backward pass, so nothing is updated and the
    caller decides what to do (``train`` ends the run as "diverged").

    Args:
        model: the classifier, in training mode.
        batch: collated inputs and ``labels``, on the model's device.
        optimizer, scheduler: as ``configure_optimizer`` makes them.
        params: the trained tensors, in one fixed order; their gradients are clipped together.
        max_grad_norm: the gradient norm they are clipped to.
        precision: ``bf16`` or ``fp16`` runs the forward pass under autocast in that dtype;
            ``fp32`` does not.
        regression: mean squared error on the single output, else cross-entropy.
        scaler: fp16's loss scaling (``new_scaler``): the step is skipped, scheduler included,
            where a gradient is infinite or NaN, and the scale lowered, as ``GradScaler`` does.

    Returns:
        The batch's loss.
    """
    take_free_cores()
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    half = half_dtype(precision)
    # Autocast on the device the batch is on: a device passed separately could disagree and
    # silently turn it off.
    with torch.autocast(labels.device.type, dtype=half or torch.bfloat16,
                        enabled=half is not None):
        logits = model(**inputs)
    loss = _loss(regression, logits, labels)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
    elif _scaled_step(loss, optimizer, scaler, params=params, max_grad_norm=max_grad_norm):
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def new_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler an fp16 run needs (None at any other precision)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, *, params: list[torch.Tensor],
                 max_grad_norm: float) -> bool:
    """Backward through the scaled loss, the gradients unscaled and clipped, and the optimiser
    step unless a gradient overflowed; whether it stepped."""
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clipping sees the true gradients
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scale = scaler.get_scale()
    scaler.step(optimizer)  # skipped where a gradient is inf or NaN
    scaler.update()  # and then the scale halves
    return scaler.get_scale() >= scale


@contextlib.contextmanager
def frozen_weights_in(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """The frozen weight matrices of ``model``'s linear layers held in ``dtype`` meanwhile (None:
    as they are), their own tensors put back after. Under bf16 autocast a linear layer casts its
    weight on every call, except a weight that trains (autocast keeps that one cast per step);
    BitFit's frozen matrices, cast once, are the very values those casts give, without the
    copies (``benchmarks/cpu_paths.py``: 1-3% of a bf16 BitFit run's training time)."""
    if dtype is None:
        yield
        return
    kept = [(m.weight, m.weight.data) for m in model.modules()
            if isinstance(m, nn.Linear) and not m.weight.requires_grad
            and m.weight.dtype != dtype]
    for weight, value in kept:
        weight.data = value.to(dtype)
    try:
        yield
    finally:
        for weight, value in kept:
            weight.data = value
