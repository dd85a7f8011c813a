"""Plain text lines for logs that are not a terminal: a cluster job's stdout and ``run_dir/log.txt``.

Every line is ``key value`` fields joined by two spaces; keys and values hold
no spaces, except the last field of a line, which may (``command ...``,
``detail ...``: the rest of the line). The first key says what the line is:
``start``, ``step`` (one per log interval), ``end``; other lines are the
run's messages as printed (warnings, evals, checkpoint fallbacks).
docs/RUNS.md "Logs: plain lines, log.txt and DeepSpeed's own lines" documents the fields.
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime, timezone
from typing import Optional

FIELD_SEP = "  "


def format_fields(fields: list[tuple[str, object]]) -> str:
    return FIELD_SEP.join(f"{key} {value}" for key, value in fields)


def parse_fields(line: str) -> dict[str, str]:
    """The fields of a start/step/end line (the inverse of :func:`format_fields`)."""
    out = {}
    for part in line.rstrip("\n").split(FIELD_SEP):
        key, _, value = part.partition(" ")
        out[key] = value
    return out


def format_duration(seconds: float) -> str:
    """``45s``, ``1m23s``, ``2h05m09s``: fixed fields, grep- and eye-friendly."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Steps at the start of a session that the ETA leaves out: start-up, ``torch.compile``'s compilation (and its
# recompiles for the first batch shapes) and the first slow steps; a 5-minute CPU run spends about 40 s there.
WARMUP_STEPS = 5


class StepClock:
    """Elapsed wall time of this session and the ETA of its last step.

    The ETA is the steps left times the wall seconds per step measured from
    the first log line at least ``WARMUP_STEPS`` into this session on, so
    start-up, compilation and the first slow steps do not count; evals and
    checkpoints after it do, in the share they take. Until a later log line
    has measured steps after that one, the rate is unknown and so is the
    ETA (None, printed ``eta -``): a first guess from the warm-up steps
    overstated a 5-minute run as 40 minutes.
    """

    def __init__(self, start_step: int, max_steps: int, started: Optional[float] = None):
        self.max_steps = max_steps
        self.start_step = start_step
        self.started = time.monotonic() if started is None else started
        self.steady: Optional[tuple[int, float]] = None  # (step, time) of the first log line after the warm-up

    def tick(self, step: int, now: Optional[float] = None) -> tuple[float, Optional[float]]:
        """(elapsed seconds, ETA seconds or None while no steady step is measured) at a log line of ``step``."""
        now = time.monotonic() if now is None else now
        left = max(0, self.max_steps - step)
        if self.steady is None and step - self.start_step >= WARMUP_STEPS:
            self.steady = (step, now)
        if left == 0:
            return now - self.started, 0.0
        if self.steady is None or step <= self.steady[0]:
            return now - self.started, None
        ref_step, ref_time = self.steady
        return now - self.started, (now - ref_time) / (step - ref_step) * left


def progress_fields(step: int, max_steps: int, scalars: dict[str, float], modalities: list[str],
                    elapsed: float, eta: Optional[float]) -> list[tuple[str, object]]:
    """The ``step`` line's fields from one log interval's scalars (TensorBoard tags ``train/...``).

    Metrics of applied steps only: ``loss nan`` when every step of the interval was skipped. ``eta None``
    (no steady step measured yet, :class:`StepClock`) is ``eta -``.
    """
    loss = scalars.get("train/loss", float("nan"))
    fields: list[tuple[str, object]] = [("step", f"{step}/{max_steps}"), ("loss", f"{loss:.4f}")]
    for name in modalities:
        if f"train/loss/{name}" in scalars:
            fields.append((f"loss/{name}", f"{scalars[f'train/loss/{name}']:.4f}"))
    if "train/align_loss" in scalars:
        fields.append(("align_loss", f"{scalars['train/align_loss']:.4f}"))
    if "train/cross_loss" in scalars:
        fields.append(("cross_loss", f"{scalars['train/cross_loss']:.4f}"))
    fields.append(("lr", f"{scalars['train/lr']:.2e}"))
    if "train/grad_norm" in scalars:
        fields.append(("grad_norm", f"{scalars['train/grad_norm']:.3f}"))
    fields.append(("samples/s", f"{scalars['train/samples_per_s']:.1f}"))
    if scalars.get("train/skipped_steps", 0):
        fields.append(("skipped_steps", int(scalars["train/skipped_steps"])))
    fields += [("elapsed", format_duration(elapsed)), ("eta", "-" if eta is None else format_duration(eta))]
    return fields


def command_line() -> str:
    """The script and its arguments, shell-quoted (the launcher's ``--local_rank`` left out)."""
    return shlex.join(a for a in sys.argv if not a.startswith(("--local_rank=", "--local-rank=")))
