"""The trainer's collectives on a real 2-process gloo group: the alignment-negative gather
(uneven rows, offsets, gradient only to local rows) and rank-averaged metrics with
different keys per rank."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int) -> None:
    from unimodal_free.train import dist as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = {0: 3, 1: 1}[rank]
        x = (torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + 100 * rank).requires_grad_(True)
        everything, offset = tdist.gather_with_local_grad(x)
        assert everything.shape == (4, 2) and offset == {0: 0, 1: 3}[rank]
        expected = torch.cat([torch.arange(6.0).reshape(3, 2), torch.arange(2.0).reshape(1, 2) + 100])
        assert torch.equal(everything.detach(), expected)
        assert torch.equal(everything[offset:offset + rows].detach(), x.detach())
        (everything * torch.arange(1.0, 5.0)[:, None]).sum().backward()
        # Gradient reaches only this rank's rows, with their position in the gathered tensor.
        assert torch.equal(x.grad, torch.arange(1.0, 5.0)[offset:offset + rows, None].expand(rows, 2))

        empty = torch.zeros(0, 2, requires_grad=True) if rank == 1 else torch.ones(2, 2, requires_grad=True)
        gathered, offset = tdist.gather_with_local_grad(empty)  # a rank without pairs still takes part
        assert gathered.shape == (2, 2) and offset == {0: 0, 1: 2}[rank]
        none, _ = tdist.gather_with_local_grad(torch.zeros(0, 2))
        assert none.shape == (0, 2)

        sums = {"loss": 2.0 * (rank + 1), f"loss/{'image' if rank == 0 else 'text'}": 1.0 + rank}
        counts = {"loss": 2.0, f"loss/{'image' if rank == 0 else 'text'}": 1.0}
        means = tdist.mean_metrics(sums, counts)
        assert means == {"loss": 1.5, "loss/image": 1.0, "loss/text": 2.0}, means
        assert tdist.any_flags([rank == 1, False]) == [True, False]
        assert tdist.sum_vector([1.0, rank]) == [2.0, 1.0] and tdist.max_scalar(float(rank)) == 1.0
    finally:
        dist.destroy_process_group()


def test_collectives_on_two_gloo_ranks():
    mp.spawn(_worker, args=(2, _port()), nprocs=2, join=True)


def test_single_process_fallbacks():
    from unimodal_free.train import dist as tdist

    x = torch.ones(3, 2)
    out, offset = tdist.gather_with_local_grad(x)
    assert out is x and offset == 0
    assert tdist.mean_metrics({"a": 3.0}, {"a": 2.0}) == {"a": 1.5}
    assert tdist.any_flags([True, False]) == [True, False] and tdist.rank() == 0 and tdist.world_size() == 1
