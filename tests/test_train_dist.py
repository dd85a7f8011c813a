"""The trainer's collectives on a real 2-process gloo group: the alignment-negative gather
(uneven rows, offsets, gradient only to local rows), rank-averaged metrics with
different keys per rank, and the alignment's all-rank normalisation statistics."""

from __future__ import annotations

import ast
import gc
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_gloo_world(rank: int, world: int, port: int, check) -> None:
    """Run ``check(rank)`` in a gloo group, destroyed only once the check's tensors are gone.

    Tensors whose autograd graph went through a collective (``all_reduce_sum``'s backward) hold the
    group; a group still referenced at interpreter exit is torn down during finalisation, where gloo's
    threads can abort a process whose check passed ("terminate called without an active exception").
    The check's locals die with its frame, and ``gc.collect`` drops any cycle, before the group goes.
    """
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        check(rank)
    finally:
        gc.collect()
        dist.destroy_process_group()


def _collectives_check(rank: int) -> None:
    from unimodal_free.train import dist as tdist

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

    # The interval metrics' reduction (train/metrics.py): sums and counts summed over ranks, a key a rank lacks
    # counting as zero, then one mean per key.
    image_or_text = "image" if rank == 0 else "text"
    summed = tdist.sum_tensors({"sum:loss": 2.0 * (rank + 1), f"sum:loss/{image_or_text}": 1.0 + rank,
                                "count:loss": 2.0, f"count:loss/{image_or_text}": 1.0})
    means = tdist.means_of({k: float(v) for k, v in summed.items()})
    assert means == {"loss": 1.5, "loss/image": 1.0, "loss/text": 2.0}, means
    assert tdist.any_flags([rank == 1, False]) == [True, False]

    from unimodal_free.config import ObjectiveConfig
    from unimodal_free.train.metrics import IntervalReport
    from unimodal_free.train.trainer import agreed_checks

    # A timed checkpoint is due on every rank as soon as one rank's clock says so (same step everywhere).
    quiet = IntervalReport(scalars={}, stds={}, target_rows={})
    assert agreed_checks(quiet, ObjectiveConfig(), 10**6, checkpoint_due=rank == 1) == (None, True)
    assert agreed_checks(quiet, ObjectiveConfig(), 10**6, checkpoint_due=False) == (None, False)
    assert tdist.sum_tensors({"v": [1.0, rank]})["v"].tolist() == [2.0, 1.0] and tdist.max_scalar(float(rank)) == 1.0


def _worker(rank: int, world: int, port: int) -> None:
    _in_gloo_world(rank, world, port, _collectives_check)


ROWS = {"image": (3, 2), "speech": (0, 4), "text": (2, 1)}  # rows on rank 0, rank 1: speech only on rank 1


def _sync_norm_check(rank: int) -> None:
    """Split rows over two ranks == all rows in one process: outputs, input gradients, running statistics."""
    import copy

    from unimodal_free.model.heads import AlignmentProjection
    from unimodal_free.objective.alignment import batch_moments
    from unimodal_free.train import dist as tdist

    modalities = list(ROWS)
    torch.manual_seed(0)
    align = AlignmentProjection(8, 4, 0.1, modalities)
    reference = copy.deepcopy(align)
    bn = torch.nn.BatchNorm1d(8, affine=False)
    g = torch.Generator().manual_seed(1)
    full = {m: torch.randn(sum(r), 8, generator=g) * 3 + 2 for m, r in ROWS.items()}
    weights = {m: torch.randn(sum(r), 4, generator=g) for m, r in ROWS.items()}
    mine = {m: slice(r[0] * rank, r[0] + r[1] * rank) for m, r in ROWS.items()}  # this rank's rows

    local = {m: full[m][mine[m]].clone().requires_grad_(True) for m in modalities if ROWS[m][rank]}
    moments = batch_moments(align, local, modalities, tdist.all_reduce_sum)
    out = {m: align.embed(m, x, moments[m]) for m, x in local.items()}
    sum((out[m] * weights[m][mine[m]]).sum() for m in out).backward()

    everything = {m: x.clone().requires_grad_(True) for m, x in full.items()}
    ref_moments = batch_moments(reference, everything, modalities)  # one process: no sum_fn
    ref = {m: reference.embed(m, x, ref_moments[m]) for m, x in everything.items()}
    sum((ref[m] * weights[m]).sum() for m in ref).backward()

    for m, x in local.items():
        torch.testing.assert_close(out[m], ref[m][mine[m]], rtol=1e-5, atol=1e-5)
        # Needs the differentiable all-reduce: other ranks' losses reach these rows through the statistics.
        torch.testing.assert_close(x.grad, everything[m].grad[mine[m]], rtol=1e-4, atol=1e-5)
    proj_grad = align.proj.weight.grad.clone()
    dist.all_reduce(proj_grad)
    torch.testing.assert_close(proj_grad, reference.proj.weight.grad, rtol=1e-4, atol=1e-5)
    bn(full["image"])  # torch's BatchNorm on all rows: the running statistics every rank must hold
    torch.testing.assert_close(align.norm_image.running_mean, bn.running_mean)
    torch.testing.assert_close(align.norm_image.running_var, bn.running_var)
    for m in modalities:
        torch.testing.assert_close(getattr(align, f"norm_{m}").running_var, getattr(reference, f"norm_{m}").running_var)


def _sync_norm_worker(rank: int, world: int, port: int) -> None:
    _in_gloo_world(rank, world, port, _sync_norm_check)


SPLIT = {"image": (3, 2), "speech": (0, 2), "text": (2, 0)}  # rows on rank 0, rank 1: speech only on rank 1


def _data2vec_gradient_worker(rank: int, world: int, port: int, stage: int, space: str, align: bool) -> None:
    """DeepSpeed ZeRO-``stage`` engines on two ranks holding different modalities: the gradient they
    reduce equals one process's over all rows (same masks), and the rank-mean loss equals its loss.

    ``align``: alignment on (negatives gathered, statistics all-reduced in forward and backward); its
    gradient is not one process's by design (remote negatives are constants, open_clip's recipe), so
    then the step must complete with every gradient finite (a rank whose graph differed hung ZeRO-3)."""
    import copy

    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.utils import safe_get_full_grad

    from synthetic_batches import make_batch, part_rows, tiny_config, tiny_specs, view_rows
    from unimodal_free.batch import Batch
    from unimodal_free.model import EMATeacher
    from unimodal_free.objective import Data2VecStudent, make_all_views
    from unimodal_free.train import dist as tdist
    from unimodal_free.train.ds_compat import lift_zero_dim_params
    from unimodal_free.train.ds_config import build_ds_config
    from unimodal_free.train.optim import build_optimizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    tdist.init_deepspeed_distributed(get_accelerator().communication_backend_name())
    try:
        cfg = tiny_config(f"objective.align_weight={1.0 if align else 0.0}", f"deepspeed.zero_stage={stage}",
                          "train.micro_batch_size=5", f"objective.target_space={space}")
        torch.manual_seed(0)
        student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, tiny_specs(cfg))
        teacher = EMATeacher(student, cfg.objective)
        reference = copy.deepcopy(student)
        made = make_batch(cfg, seed=11, pairs=5)
        full = Batch({m: part_rows(p, 0, sum(SPLIT[m])) for m, p in made.parts.items()})
        views = make_all_views(full, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
        mine = {m: (SPLIT[m][0] * rank, SPLIT[m][0] + SPLIT[m][1] * rank) for m in SPLIT if SPLIT[m][rank]}
        local = Batch({m: part_rows(full.parts[m], lo, hi) for m, (lo, hi) in mine.items()})
        local_views = {m: view_rows(views[m], lo, hi) for m, (lo, hi) in mine.items()}

        lifted = lift_zero_dim_params(student)  # as the trainer: DeepSpeed cannot move 0-dim parameters
        engine, _, _, _ = deepspeed.initialize(model=student, optimizer=build_optimizer(student, cfg.optim, False),
                                               config=build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, world))
        out = engine(local, teacher.module, None, tdist.gather_with_local_grad, tdist.all_reduce_sum,
                     views=local_views)
        engine.backward(out.loss)
        reduced = {name: safe_get_full_grad(p) for name, p in engine.module.named_parameters()}  # collective
        if align:
            assert lifted and all(g is not None and torch.isfinite(g).all() for g in reduced.values())
            return

        ref = reference(full, teacher.module, None, views=views)
        ref.loss.backward()
        for name, p in reference.named_parameters():
            assert reduced[name] is not None, name
            torch.testing.assert_close(reduced[name].float().view(p.shape), p.grad, rtol=1e-4, atol=1e-7,
                                       msg=f"ZeRO-{stage} {space}: gradient of {name}")

        assert not reduced["embed.pad_speech"].eq(0).all()  # rank 0 holds no speech row, rank 1 does
        mean_loss = float(tdist.sum_tensors({"loss": float(out.loss)})["loss"]) / tdist.world_size()
        assert mean_loss == pytest.approx(float(ref.loss), rel=1e-5)
    finally:
        engine = None  # dropped before the groups, as the trainer does (see dist.shutdown)
        tdist.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("stage,space,align", [(0, "latents", False), (2, "latents", False), (3, "latents", False),
                                               (2, "elements", False), (3, "latents", True)])
def test_ranks_with_different_modalities_reduce_the_gradient_of_one_process(stage, space, align):
    context = mp.spawn(_data2vec_gradient_worker, args=(2, _port(), stage, space, align), nprocs=2, join=False)
    deadline = time.monotonic() + 600
    while not context.join(timeout=5):  # raises the failing rank's error
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError("the ranks hung: their collectives did not match")


def test_alignment_statistics_span_both_ranks():
    mp.spawn(_sync_norm_worker, args=(2, _port()), nprocs=2, join=True)


def test_collectives_on_two_gloo_ranks():
    mp.spawn(_worker, args=(2, _port()), nprocs=2, join=True)


def test_single_process_fallbacks():
    from unimodal_free.train import dist as tdist

    x = torch.ones(3, 2)
    out, offset = tdist.gather_with_local_grad(x)
    assert out is x and offset == 0
    summed = tdist.sum_tensors({"sum:a": 3.0, "count:a": 2.0, "sum:b": 1.0, "count:b": 0.0})
    assert tdist.means_of({k: float(v) for k, v in summed.items()}) == {"a": 1.5}  # b: observed by nobody
    assert tdist.any_flags([True, False]) == [True, False] and tdist.rank() == 0 and tdist.world_size() == 1


class _Reached(Exception):
    """Raised by the recording collectives once they have seen a call's tensors."""


def test_every_collective_helper_uses_the_comm_device(monkeypatch):
    """NCCL reduces only CUDA tensors, gloo CPU ones: a helper that builds its tensors anywhere but the decided
    comm device failed every GPU launch ("No backend type associated with device type cpu"). Here the comm
    device is `meta` (anything but the tensors' default, the CPU), ranks are 2 and torch.distributed's
    collectives record the device of every tensor they are handed; every helper must hand them meta tensors."""
    from unimodal_free.train import dist as tdist

    seen: list[tuple[str, torch.device]] = []

    def recorder(name):
        def collective(*args, **kwargs):
            for a in args:
                for t in a if isinstance(a, list) else [a]:
                    if isinstance(t, torch.Tensor):
                        seen.append((name, t.device))
            raise _Reached(name)
        return collective

    def gather_object(out, obj, group=None):  # objects carry no device: a 2-rank world of this rank twice
        out[:] = [obj] * len(out)

    monkeypatch.setattr(tdist, "is_dist", lambda: True)
    monkeypatch.setattr(tdist, "world_size", lambda: 2)
    monkeypatch.setattr(tdist, "rank", lambda: 0)
    for name in ("all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all"):
        monkeypatch.setattr(dist, name, recorder(name))
    monkeypatch.setattr(dist, "all_gather_object", gather_object)
    monkeypatch.setattr(tdist, "_COMM_DEVICE", torch.device("meta"), raising=False)  # the decided device

    x = torch.ones(3, 2, requires_grad=True)  # the model's tensors: on the CPU here
    calls = {
        "any_flags": lambda: tdist.any_flags([True]),
        "max_scalar": lambda: tdist.max_scalar(1.0),
        "sum_tensors": lambda: tdist.sum_tensors({"moments": torch.ones(5), "rows": 3.0}),
        "gather_with_local_grad": lambda: tdist.gather_with_local_grad(x),
        "all_reduce_sum": lambda: tdist.all_reduce_sum(x),
    }
    for helper, call in calls.items():
        seen.clear()
        with pytest.raises(_Reached):
            call()
        assert seen and all(device == torch.device("meta") for _, device in seen), (helper, seen)


def test_comm_device_follows_the_backend():
    from unimodal_free.train import dist as tdist

    try:
        assert tdist.set_comm_device(torch.device("cuda", 1), "nccl") == torch.device("cuda", 1)
        assert tdist.comm_device() == torch.device("cuda", 1)
        assert tdist.set_comm_device("cuda:1", "gloo") == torch.device("cpu")  # gloo reduces host tensors
        assert tdist.set_comm_device("cpu", "ccl") == torch.device("cpu")
    finally:
        tdist.set_comm_device("cpu", "gloo")


def test_collectives_are_issued_only_by_train_dist():
    """By construction: the rest of the package reaches torch.distributed's collectives only through
    unimodal_free/train/dist.py (which puts every tensor on the comm device)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "unimodal_free"
    pattern = re.compile(r"\b(all_reduce|all_gather|broadcast|reduce_scatter|all_to_all|send|recv)\(")
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "dist.py" and path.parent.name == "train" or path.parent.name == "bench":
            continue  # bench/ measures DeepSpeed itself, in its own processes
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, offenders


def _reaches_shutdown_from_a_finally(tree) -> bool:
    """Whether a ``finally:`` block in ``tree`` calls ``shutdown``, directly or through functions of the module."""
    def called(nodes) -> set[str]:
        names = set()
        for node in (n for top in nodes for n in ast.walk(top)):
            if isinstance(node, ast.Call):
                f = node.func
                names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
        return names

    calls_of = {f.name: called(f.body) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and node.finalbody:
            seen, todo = set(), called(node.finalbody)
            while todo:
                name = todo.pop()
                if name == "shutdown":
                    return True
                if name not in seen:
                    seen.add(name)
                    todo |= calls_of.get(name, set())
    return False


def test_every_process_that_joins_the_group_destroys_it_in_a_finally():
    """A gloo group left to interpreter exit can abort a finished process (exit 250, "terminate called without
    an active exception"): every module that starts the group tears it down through dist.shutdown."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "unimodal_free"
    starters = [p for p in root.rglob("*.py") if "init_deepspeed_distributed(" in p.read_text()
                and p.name != "dist.py"]
    assert {p.name for p in starters} >= {"trainer.py", "zero_state.py"}
    missing = [str(p.relative_to(root)) for p in starters
               if not _reaches_shutdown_from_a_finally(ast.parse(p.read_text()))]
    assert missing == []
