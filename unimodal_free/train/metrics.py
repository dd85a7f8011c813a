"""Interval metrics: what the trainer accumulates between two log lines and turns into TensorBoard scalars.

Metrics, row counts and the collapse statistics stay device tensors / local
counts during the interval; at its end one all-reduce and one host read turn
them into scalars. Logging here reports; it never decides to stop (the
trainer's loop judges the collapse statistics it returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from unimodal_free.objective.collapse import std_from_moments
from unimodal_free.train import dist
from unimodal_free.train.mfu import mfu
from unimodal_free.train.state import TrainerState
from unimodal_free.train.tblog import RunLogger


class IntervalStats:
    """What the trainer accumulates between two log lines, without reading anything back.

    ``sums``/``counts``: metric sums (device tensors) and how many values each
    holds; ``moments``: the collapse guard's row moments (device tensors);
    ``local``: this rank's row/element/skip counts (host numbers from the
    loader, never a device read). :meth:`reduce` sums all of it over ranks in
    one all-reduce.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, float] = {}
        self.moments: dict[str, torch.Tensor] = {}
        self.local: dict[str, float] = {}
        self.counted: dict[str, float] = {}  # global counts already summed this interval (at a checkpoint)
        self.seconds = 0.0

    def reset(self) -> None:
        self.__init__()

    def add(self, key: str, value: torch.Tensor | float) -> None:
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0.0) + 1

    def add_moments(self, key: str, value: torch.Tensor) -> None:
        self.moments[key] = self.moments[key] + value if key in self.moments else value.detach()

    def merge(self, other: "IntervalStats") -> None:
        """Add ``other``'s metric sums and moments (an applied step's) to these."""
        for key, value in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0.0) + other.counts[key]
        for key, value in other.moments.items():
            self.add_moments(key, value)

    def count(self, key: str, value: float) -> None:
        self.local[key] = self.local.get(key, 0.0) + value

    def take_counts(self, summed: dict[str, float], state: TrainerState) -> None:
        """Global counts (``local`` summed over ranks) into the run state and this interval."""
        for k, v in summed.items():
            self.counted[k] = self.counted.get(k, 0.0) + v
        state.samples_seen += int(summed.get("rows", 0))
        for key, n in summed.items():
            if key.startswith("rows/"):
                state.rows_seen[key[5:]] = state.rows_seen.get(key[5:], 0) + int(n)
        state.skipped_samples += int(summed.get("skipped", 0))
        self.local = {}

    def flush_counts(self, state: TrainerState) -> None:
        """Sum pending counts over ranks now (a checkpoint must record global totals); collective."""
        summed = dist.sum_tensors(self.local)  # ranks may hold different keys (modalities absent here)
        keys = sorted(summed)
        host = torch.stack([summed[k] for k in keys]).tolist() if keys else []
        self.take_counts(dict(zip(keys, host)), state)

    def reduce(self, state: TrainerState) -> tuple[dict[str, float], ...]:
        """(metric means, collapse stds, rows behind them, global counts) over the interval and all ranks.

        One all-reduce of everything; stds are computed on the comm device
        and everything is read back in one transfer.
        """
        summed = dist.sum_tensors({
            **{f"sum:{k}": v for k, v in self.sums.items()},
            **{f"count:{k}": v for k, v in self.counts.items()},
            **{f"moments:{k}": v for k, v in self.moments.items()},
            **{f"local:{k}": v for k, v in self.local.items()},
        })
        scalars = {k: v for k, v in summed.items() if not k.startswith("moments:")}
        for k, v in summed.items():
            if k.startswith("moments:"):  # "moments:target/image" -> "target_std/image"
                kind, modality = k[len("moments:"):].split("/")
                scalars[f"std:{kind}_std/{modality}"] = std_from_moments(v)
                scalars[f"std_rows:{kind}/{modality}"] = v[0]
        keys = sorted(scalars)
        host = dict(zip(keys, torch.stack([scalars[k].reshape(()) for k in keys]).tolist())) if keys else {}
        means = dist.means_of(host)
        stds = {k[4:]: v for k, v in host.items() if k.startswith("std:")}
        std_rows = {k[9:]: v for k, v in host.items() if k.startswith("std_rows:")}
        self.take_counts({k[6:]: v for k, v in host.items() if k.startswith("local:")}, state)
        return means, stds, std_rows, dict(self.counted)


@dataclass(frozen=True)
class IntervalReport:
    """One log interval, reduced over ranks: the scalars logged and the collapse guard's inputs."""

    scalars: dict[str, float]  # as written to TensorBoard ("train/...")
    stds: dict[str, float]  # "target_std/image": the interval's pooled row std
    target_rows: dict[str, float]  # rows behind each modality's target std


class IntervalMetrics:
    """Accumulates steps' metrics (``stats``) and writes one interval's scalars to the run logger."""

    def __init__(self, logger: RunLogger, modalities: list[str], world: int, peak_flops: float,
                 epoch_samples: int, ema_decay: Callable[[int], float], start_step: int):
        self.logger = logger
        self.modalities = modalities
        self.world = world
        self.peak_flops = peak_flops
        self.epoch_samples = epoch_samples
        self.ema_decay = ema_decay  # the teacher's EMA decay at a step
        self.start_step = start_step
        self.stats = IntervalStats()
        self.last_log: dict[str, float] = {}  # the last interval's scalars (progress bar, model card)
        self.first_log = True

    def log_interval(self, state: TrainerState, lr: float) -> IntervalReport:
        """Rank-summed interval metrics to TensorBoard (collective); resets the interval."""
        metrics, stds, std_rows, counts = self.stats.reduce(state)
        step = state.step
        seconds = dist.max_scalar(self.stats.seconds)
        scalars = self._scalars(metrics, stds, std_rows, counts, seconds, state, lr)
        self.logger.scalars(scalars, step)
        if self.first_log:
            self.first_log = False
            self._warn_missing_modalities(counts, step)
        target_rows = {k.split("/")[1]: n for k, n in std_rows.items() if k.startswith("target/")}
        self.last_log = scalars
        self.stats.reset()
        return IntervalReport(scalars, stds, target_rows)

    def _scalars(self, metrics: dict[str, float], stds: dict[str, float], std_rows: dict[str, float],
                 counts: dict[str, float], seconds: float, state: TrainerState, lr: float) -> dict[str, float]:
        per_s = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
        scalars = {f"train/{k}": v for k, v in metrics.items() if k != "padding_fraction"}
        if "padding_fraction" in metrics:
            scalars["train/padding_waste"] = metrics["padding_fraction"]
        for key, value in stds.items():  # "target_std/image": logged where its rows make a std (>= 2)
            kind, modality = key.split("_std/")
            if std_rows[f"{kind}/{modality}"] >= 2:
                scalars[f"train/{key}"] = value
        if seconds > 0 and self.peak_flops > 0:  # per-rank mean FLOPs over the slowest rank's time
            scalars["train/mfu"] = mfu(counts.get("flops", 0.0) / self.world, seconds, self.peak_flops)
        scalars["train/lr"] = lr
        scalars["train/ema_decay"] = self.ema_decay(state.step - 1)
        scalars["train/samples_per_s"] = per_s(counts.get("rows", 0.0))
        scalars["train/elements_per_s"] = per_s(counts.get("elements", 0.0))
        for name in self.modalities:
            scalars[f"train/rows/{name}"] = counts.get(f"rows/{name}", 0.0)
            scalars[f"train/rows_per_s/{name}"] = per_s(counts.get(f"rows/{name}", 0.0))
        scalars["train/skipped_samples"] = state.skipped_samples
        scalars["train/skipped_steps"] = state.skipped_steps
        scalars["train/samples_seen"] = state.samples_seen
        scalars["train/epoch"] = state.samples_seen / self.epoch_samples
        return scalars

    def _warn_missing_modalities(self, counts: dict[str, float], step: int) -> None:
        missing = [name for name in self.modalities if not counts.get(f"rows/{name}", 0)]
        if missing:
            self.logger.message(
                f"warning: configured modality {', '.join(map(repr, missing))} appeared in none of the first "
                f"{int(counts.get('batches', 0))} batches (steps {self.start_step + 1}-{step}, {self.world} "
                f"rank(s)); is it in data.train?"
            )
