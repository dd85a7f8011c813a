"""Deterministic failure points for the crash tests (off unless UNIMODAL_FREE_TEST_HOOK is set).

``UNIMODAL_FREE_TEST_HOOK=<point>:<step>``: when rank 0 reaches ``point`` at
optimizer step ``step`` it writes ``<run_dir>/HOOK_<point>_<step>`` and sleeps
until killed, so a test can SIGKILL the run at exactly that point.
Points: ``after_step`` (a step finished, nothing saved), ``in_save`` (the
engine files of a checkpoint are written, the COMPLETE marker and ``latest``
are not).

``UNIMODAL_FREE_TEST_NAN=<rank>:<step>,<step>...``: that rank's loss becomes
NaN at those optimizer steps (1-based), to exercise the non-finite skip.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "UNIMODAL_FREE_TEST_HOOK"


def hook(point: str, step: int, run_dir: Path, rank: int) -> None:
    spec = os.environ.get(ENV, "")
    if not spec or rank != 0:
        return
    want_point, _, want_step = spec.partition(":")
    if want_point != point or str(step) != want_step:
        return
    (Path(run_dir) / f"HOOK_{point}_{step}").write_text(str(os.getpid()))
    while True:  # wait for the test's SIGKILL
        time.sleep(1)


def nan_loss(step: int, rank: int) -> bool:
    """True if the test asked for a NaN loss on ``rank`` at optimizer step ``step`` (1-based)."""
    spec = os.environ.get("UNIMODAL_FREE_TEST_NAN", "")
    if not spec:
        return False
    want_rank, _, steps = spec.partition(":")
    return int(want_rank) == rank and str(step) in steps.split(",")
