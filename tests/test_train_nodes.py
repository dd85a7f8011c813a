"""Two nodes of one rank each, on this machine, through DeepSpeed's own launcher (hostfile + ``--no_ssh``).

Each "node" is its own launcher process (``--node_rank 0`` / ``1``, ``--master_addr 127.0.0.1``), as one
launcher per node under a scheduler; the ranks meet over TCP (gloo), without DeepSpeed's single-node shared
memory all-reduce. The losses must equal those of the session's 2-rank one-node run (``stage_run``), step by
step to rtol 1e-6: the same two ranks with the same data, seeds and threads, only launched apart.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch

from helpers import MAX_STEPS, leftover_shm, needs_launcher, node_cmds, scalars, stage_run, start, tail, tiny_data, \
    train_cmd


@pytest.mark.slow
@needs_launcher
def test_two_nodes_of_one_rank_train_like_one_node_of_two(tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    reference = stage_run(2, base)
    data = tiny_data(base)
    run_dir = base / "two_nodes"
    # The one-node ranks' thread count (the trainer gives each of 2 local ranks half the cores).
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    cmds = node_cmds(train_cmd(data, run_dir, 2), base / "hostfile")
    logs = [base / f"two_nodes_{r}.log" for r in range(len(cmds))]
    procs = [start(cmd, log, env) for cmd, log in zip(cmds, logs)]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert codes == [0, 0], "\n".join(tail(log) for log in logs)
    assert not any(leftover_shm(cmd) for cmd in cmds)

    text = (run_dir / "log.txt").read_text()
    assert "world_size 2" in text and "reason done" in text, text[-2000:]
    got, want = scalars(run_dir, "train/loss"), scalars(reference, "train/loss")
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, MAX_STEPS + 1)), got
    torch.testing.assert_close(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]), rtol=1e-6, atol=0)
