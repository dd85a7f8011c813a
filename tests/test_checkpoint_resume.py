"""Crash and resume with 2 CPU ranks under ZeRO-3 (DeepSpeed launcher).

One timeline, three sessions of the same run directory:
  A  SIGKILL mid-training: after step 5 (checkpoints at 2 and 4 complete);
  B  resumed from 4, SIGKILL while writing the step-6 checkpoint (engine files
     written, COMPLETE and ``latest`` not yet);
  C  resumed: must pick step 4 (the half-written 6 is never used) and finish.
Every step's loss of the stitched run equals the uninterrupted run's (the
ZeRO-3 run of test_train_launch.py) to rtol 1e-6 (float32 TensorBoard values;
resume is exact by construction: engine, teacher, RNG, data position), and
TensorBoard shows each step exactly once. (The reference evaluates the
student at steps 4 and 8, these sessions the teacher: eval never touches the
training RNG streams, so the losses still agree.)
"""

from __future__ import annotations

import pytest
import torch

from helpers import (
    MAX_STEPS,
    needs_launcher,
    run,
    run_until_file,
    scalars,
    stage_run,
    tail,
    tiny_data,
    train_cmd,
    warm_up_deepspeed,
)
from train_callbacks import with_callbacks


@pytest.mark.slow
@needs_launcher
def test_sigkill_mid_training_and_during_checkpoint_write_then_exact_resume(tmp_path_factory):
    from unimodal_free.store.checkpoints import is_complete
    from unimodal_free.store.weights import load_weights
    from unimodal_free.train.checkpoint_manager import CheckpointManager

    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    reference = stage_run(3, base)
    warm_up_deepspeed()
    data = tiny_data(base)
    run_dir = base / "crash"
    log = base / "crash.log"
    ckpts = run_dir / "checkpoints"

    # A: killed after step 5, nothing saved since step 4.
    run_until_file(with_callbacks(train_cmd(data, run_dir, 3), "--pause-at", "after_step:5"), log,
                   run_dir / "HOOK_after_step_5")
    assert (ckpts / "latest").read_text().strip() == "step00000004"

    # B: resumes from 4, killed inside the step-6 save (after DeepSpeed's files, before COMPLETE/latest).
    run_until_file(
        with_callbacks(train_cmd(data, run_dir, 3, "train.resume=auto"), "--pause-at", "in_save:6"), log,
        run_dir / "HOOK_in_save_6",
    )
    half = ckpts / "step00000006"
    assert any(half.glob("*optim_states.pt")) and (half / "model.safetensors").exists()
    assert not is_complete(half)
    assert (ckpts / "latest").read_text().strip() == "step00000004"
    assert CheckpointManager(run_dir).latest_tag() == "step00000004"
    assert load_weights(run_dir).step == 4  # readers never see the half-written checkpoint either

    # C: resumes from the previous good checkpoint and finishes.
    before = log.read_text(errors="replace")
    assert run(train_cmd(data, run_dir, 3, "train.resume=auto"), log) == 0, tail(log)
    session_c = log.read_text(errors="replace")[len(before):]
    assert "resuming from" in session_c and "step00000004 at step 4" in session_c, session_c[-3000:]

    got = scalars(run_dir, "train/loss")
    want = scalars(reference, "train/loss")
    assert [s for s, _ in got] == list(range(1, MAX_STEPS + 1)), got  # no duplicated or missing steps
    assert [s for s, _ in want] == list(range(1, MAX_STEPS + 1))
    torch.testing.assert_close(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]), rtol=1e-6, atol=0)
    for tag in ("train/lr", "train/ema_decay", "train/samples_seen"):
        assert [s for s, _ in scalars(run_dir, tag)] == list(range(1, MAX_STEPS + 1)), tag
        assert scalars(run_dir, tag) == scalars(reference, tag), tag

    # Same final weights as the uninterrupted run.
    a, b = load_weights(run_dir), load_weights(reference)
    for k in b.teacher:
        torch.testing.assert_close(a.teacher[k], b.teacher[k], rtol=1e-6, atol=1e-7, msg=f"teacher {k}")
        torch.testing.assert_close(a.student[k], b.student[k], rtol=1e-6, atol=1e-7, msg=f"student {k}")
    assert CheckpointManager(run_dir).complete_tags() == ["step00000006", "step00000008"]
