"""One optimizer step: ``train.grad_accum`` micro-batches through the DeepSpeed engine, then the EMA teacher.

Inside a step the host waits on the device only where the step's outcome is
decided: DeepSpeed's (or, without ZeRO in fp32, our optimizer's) non-finite
check, and one small all-reduce of the stop request after it.

A non-finite loss on any rank refuses the step on every rank by
construction: that rank multiplies its loss by NaN (on the device), its
gradients turn NaN, and the gradient all-reduce carries the NaN to every
rank, where DeepSpeed's overflow check (or our optimizer's check without
ZeRO) skips the step. The teacher follows only applied steps, and only
applied steps' metrics are counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

from unimodal_free.batch import Batch
from unimodal_free.config import DeepSpeedConfig, TrainConfig
from unimodal_free.model import EMATeacher
from unimodal_free.train import dist
from unimodal_free.train.callbacks import TrainerCallback
from unimodal_free.train.metrics import IntervalStats
from unimodal_free.train.signals import StopRequest
from unimodal_free.train.state import TrainerState


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step decided (agreed by every rank)."""

    lr: float  # the learning rate the step used
    applied: bool  # False: a non-finite step, refused on every rank
    stop: bool  # a stop signal arrived on some rank: checkpoint and end after this step


class TrainStep:
    """Runs optimizer steps; ``loss`` and ``flops`` are the objective bound to the run (see Trainer._build_step)."""

    def __init__(self, engine, teacher: EMATeacher, loader: Iterator[Batch], device: torch.device,
                 loss: Callable[[Batch], Any], flops: Callable[[Batch], dict[str, float]],
                 train_cfg: TrainConfig, ds_cfg: DeepSpeedConfig, callbacks: TrainerCallback, rank: int):
        self.engine = engine
        self.teacher = teacher
        self.loader = loader
        self.device = device
        self.loss = loss
        self.flops = flops
        self.grad_accum = train_cfg.grad_accum
        self.zero3 = ds_cfg.zero_stage == 3
        self.ema_gather_numel = ds_cfg.ema_gather_numel
        self.callbacks = callbacks
        self.rank = rank

    def run(self, state: TrainerState, stats: IntervalStats, stop: StopRequest) -> StepResult:
        """One optimizer step; counts go to ``stats`` now, metrics only if the step is applied."""
        engine = self.engine
        # The LR this step uses; the schedule advances only on applied steps (DeepSpeed skips it on overflow).
        lr = float(engine.get_lr()[0])
        grad_norm = None
        step_stats = IntervalStats()  # this step's metrics: into ``stats`` only if the step is applied
        t0 = time.perf_counter()
        for _ in range(self.grad_accum):
            with stop.waiting_for_data():
                batch = next(self.loader)  # on the host: its counts cost no device read
            state.micro_batches += 1
            self._count(batch, stats)
            self._backward(batch.to(self.device), state.step + 1, step_stats)
            if engine.is_gradient_accumulation_boundary() and engine.zero_optimization_stage() == 0:
                grad_norm = self._local_grad_norm()
            engine.step()
        applied = engine.was_step_applied()  # read by DeepSpeed from its own overflow check: no extra sync
        (stop_now,) = dist.any_flags([stop.requested])  # the one collective of ours per step
        if applied:
            norm = engine.get_global_grad_norm()
            grad_norm = norm if norm is not None else grad_norm
            if grad_norm is not None:
                step_stats.add("grad_norm", grad_norm)
            stats.merge(step_stats)
            self._update_teacher(state.step)
            state.nonfinite_in_row = 0
        else:
            state.skipped_steps += 1
            state.nonfinite_in_row += 1
        state.step += 1
        dt = time.perf_counter() - t0
        state.train_time_s += dt
        stats.seconds += dt
        return StepResult(lr=lr, applied=applied, stop=stop_now)

    def _count(self, batch: Batch, stats: IntervalStats) -> None:
        """The micro-batch's host-side counts (applied or not: rows were consumed either way)."""
        flops = self.flops(batch)
        stats.count("flops", flops["student"] + flops["teacher"])
        stats.count("rows", batch.rows)
        stats.count("elements", batch.num_elements())
        stats.count("skipped", batch.skipped)
        stats.count("batches", 1)
        for name, part in batch.parts.items():
            stats.count(f"rows/{name}", part.rows)

    def _backward(self, batch: Batch, step: int, step_stats: IntervalStats) -> None:
        """Loss, its metrics into ``step_stats``, and backward of one micro-batch of optimizer step ``step``."""
        out = self.loss(batch)
        loss = self.callbacks.on_loss(out.loss.float().reshape(()), step, self.rank)
        # Non-finite here -> NaN gradients here -> NaN everywhere after the gradient all-reduce, where the
        # overflow check refuses the step on every rank. Decided on the device: no host read per micro-batch.
        loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
        step_stats.add("loss", loss)
        for key, value in out.metrics.items():
            if not key.startswith(("target_std/", "pred_std/")):  # the guard's stds come from the moments
                step_stats.add(key, value)
        for key, value in out.moments.items():
            step_stats.add_moments(key, value)
        self.engine.backward(loss)

    def _local_grad_norm(self) -> Optional[torch.Tensor]:
        """Global grad norm without ZeRO (gradients are already all-reduced at the boundary); on the device."""
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return None
        return torch.nn.utils.get_total_norm(grads)

    def _update_teacher(self, step: int) -> None:
        """EMA from the full student; under ZeRO-3 its partitions are gathered one chunk at a time."""
        gather = None
        if self.zero3:
            import deepspeed  # heavy: only ZeRO-3 runs need its parameter gathering here

            def gather(params):
                return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        self.teacher.update(self.engine.module, step, gather=gather, chunk_numel=self.ema_gather_numel)
