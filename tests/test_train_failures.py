"""Failure handling in real runs: non-finite losses are skipped on every rank and counted, K in a row
stop the run after a checkpoint (exit 4); the collapse guard stops with its message (exit 3)."""

from __future__ import annotations

import json

import pytest
import torch

from test_train_launch import needs_launcher, run, scalars, tail, tiny_data, train_cmd, warm_up_deepspeed


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("stage", [0, 2])  # 0: the optimizer's own check; 2: DeepSpeed's overflow check
def test_nonfinite_steps_are_skipped_on_all_ranks_and_stop_the_run(stage, tmp_path_factory):
    from unimodal_free.batch import modality_specs
    from unimodal_free.data.tokenizer import load_tokenizer
    from unimodal_free.model import build_model
    from unimodal_free.train.checkpoint import CheckpointManager
    from unimodal_free.train.export import load_weights

    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    warm_up_deepspeed()
    data = tiny_data(base)
    run_dir = base / f"nonfinite{stage}"
    log = base / f"nonfinite{stage}.log"
    cmd = train_cmd(
        data, run_dir, stage,
        "train.checkpoint_every=1", "train.keep_last=10", "train.max_nonfinite_in_row=2", "eval.every=0",
    )
    # Rank 1 alone gets a NaN loss at steps 2, 4 and 5; rank 0 must skip the same steps.
    rc = run(cmd, log, env={"UNIMODAL_FREE_TEST_NAN": "1:2,4,5"})
    assert rc == 4, tail(log)
    assert "2 non-finite steps in a row" in log.read_text(errors="replace")

    assert scalars(run_dir, "train/skipped_steps") == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 3.0)]
    assert [s for s, _ in scalars(run_dir, "train/loss")] == [1, 3]  # poisoned steps log no loss
    lr = dict(scalars(run_dir, "train/lr"))
    assert lr[2] == lr[3] and lr[3] < lr[4] == lr[5]  # the LR schedule advances only on applied steps

    ckpt = CheckpointManager(run_dir)
    assert ckpt.latest_tag() == "step00000005"  # the stop saved the last good weights
    state = json.loads((run_dir / "checkpoints" / "step00000005" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 3 and state["nonfinite_in_row"] == 2

    w = {s: load_weights(run_dir / "checkpoints" / f"step{s:08d}") for s in range(1, 6)}
    # Parameters only: buffers such as BatchNorm running statistics move in every forward.
    model = build_model(w[1].cfg, modality_specs(w[1].cfg.data, load_tokenizer(w[1].tokenizer_ref["path"]).vocab_size))
    params = [name for name, _ in model.named_parameters()]

    def same(a, b, which):
        return all(torch.equal(getattr(a, which)[k], getattr(b, which)[k]) for k in params)

    for which in ("student", "teacher"):  # skipped steps change neither the student nor the EMA teacher
        assert same(w[1], w[2], which) and same(w[3], w[4], which) and same(w[4], w[5], which), which
        assert not same(w[2], w[3], which), which
    assert all(torch.isfinite(v).all() for v in w[5].student.values())


@pytest.mark.slow
def test_collapse_guard_stops_with_its_message(tmp_path_factory):
    """One process without the launcher (same entry point): exit 3 and the guard's message.

    Its steps hold 2-3 rows per modality (8-row micro-batches, logged every step): below the default
    objective.collapse_min_rows (8), so the test lowers it to let the guard judge at step 2.
    """
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    data = tiny_data(base)
    run_dir = base / "collapse"
    log = base / "collapse.log"
    cmd = train_cmd(
        data, run_dir, 0, "objective.collapse_warmup_steps=2", "objective.min_target_std=1000.0", "eval.every=0",
        "objective.collapse_min_rows=2", launcher=False,
    )
    assert run(cmd, log) == 3, tail(log)
    text = log.read_text(errors="replace")
    assert "representation collapse at step 2: target_std of modality" in text
    assert "objective.min_target_std=1000.0" in text
    assert [s for s, _ in scalars(run_dir, "train/loss")] == [1, 2]
