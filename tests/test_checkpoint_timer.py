"""``train.checkpoint_every_minutes``: the timer, and a real 1-rank run that saves on it between step-based saves.

(Agreement across ranks: test_train_dist.py's 2-rank gloo check of ``agreed_checks``.)
"""

from __future__ import annotations

import pytest

from helpers import run_trainer
from unimodal_free.train.checkpoint_timer import CheckpointTimer


def test_timer_is_due_after_its_period_and_restarts():
    now = [100.0]
    timer = CheckpointTimer(2.0, clock=lambda: now[0])
    now[0] += 119.0
    assert not timer.due()
    now[0] += 1.0
    assert timer.due()
    timer.restart()
    assert not timer.due()
    now[0] += 120.0
    assert timer.due()
    assert not CheckpointTimer(0.0, clock=lambda: now[0] + 1e9).due()  # 0: off


@pytest.mark.slow
def test_timed_checkpoints_at_log_steps_beside_step_based_ones(tmp_path, monkeypatch):
    from unimodal_free.train.checkpoint_manager import CheckpointManager

    # A period shorter than any step: due at every log step (2, 4), plus the step-based one (3) and the last (5).
    rc = run_trainer(tmp_path, monkeypatch, "train.max_steps=5", "train.log_every=2", "train.checkpoint_every=3",
                     "train.keep_last=10", "train.checkpoint_every_minutes=0.000001")
    assert rc == 0
    assert CheckpointManager(tmp_path / "run").complete_tags() == [f"step0000000{s}" for s in (2, 3, 4, 5)]
