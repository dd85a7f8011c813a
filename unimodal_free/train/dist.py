"""Rank state and the few collectives the trainer needs (torch.distributed, any backend).

Everything degrades to a no-op when no process group is running, so the
same code serves one process and ``deepspeed --num_gpus N``.

Every tensor that meets a collective lives on :func:`comm_device`, decided
once by :func:`set_comm_device` (the trainer calls it right after the process
group starts): the engine's device under NCCL (which cannot reduce CPU
tensors), the CPU under gloo. Helpers build their tensors there and move
caller tensors there, so no call site can pick a device of its own.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from unimodal_free.train.ds_noise import quiet_prints


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


_COMM_DEVICE = torch.device("cpu")


def set_comm_device(engine_device: torch.device | str, backend: str | None = None) -> torch.device:
    """Decide the device of every collective: CPU for gloo (or a CPU engine), else the engine's device."""
    global _COMM_DEVICE
    engine_device = torch.device(engine_device)
    if backend is None:
        backend = dist.get_backend() if is_dist() else "gloo"
    cpu = engine_device.type == "cpu" or str(backend) == "gloo"
    _COMM_DEVICE = torch.device("cpu") if cpu else engine_device
    return _COMM_DEVICE


def comm_device() -> torch.device:
    """The device collectives use (see :func:`set_comm_device`; CPU until it is called)."""
    return _COMM_DEVICE


def barrier() -> None:
    if is_dist():
        dist.barrier()


def ensure_env_for_single_process() -> None:
    """Fill the launcher's env vars when run as plain ``python launch/train.py``.

    deepspeed.init_distributed otherwise falls back to MPI discovery.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


class PortInUseError(RuntimeError):
    """The rendezvous port (``MASTER_PORT``, the launcher's ``--master_port``) is taken: a one-line user error."""


def init_deepspeed_distributed(backend: str | None) -> None:
    """``deepspeed.init_distributed`` without leaking shared memory.

    On CPU, DeepSpeed's shm comm op gives every local rank a ~66 MB
    ``/dev/shm/deepspeed_allreduce_buffer_{uid}_{addr}_{port}_{rank}`` segment
    and never unlinks it, so every launch would leave its ranks' segments
    behind (tmpfs is RAM: a test suite of launches ran a 24 GiB machine out of
    memory). Each rank maps every peer's segment inside init_distributed, so
    once all ranks are past it the names can go; the mappings stay valid and
    the memory returns when the last rank exits, however it exits.

    Its "shm_comm_op built successfully" print is dropped (train/ds_noise.py). A rendezvous port
    that another process holds (a second run with the launcher's default 29500) raises
    :class:`PortInUseError` naming ``--master_port`` instead of torch's 40-line traceback.
    """
    import deepspeed  # heavy: only a run needs it (dist's collectives are plain torch.distributed)

    try:
        with quiet_prints():
            deepspeed.init_distributed(dist_backend=backend)
    except dist.DistNetworkError as exc:
        if "EADDRINUSE" not in str(exc):
            raise
        port = os.environ.get("MASTER_PORT", "?")
        raise PortInUseError(f"port {port} is in use (another run?): pass --master_port PORT to deepspeed") from None
    barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), rank()
    )
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:  # no shm op (GPU, multi-node, one process)
        pass


def shutdown() -> None:
    """Destroy every process group while the interpreter is fully alive, after a run or a failure.

    A gloo backend (or its pending work) still referenced at interpreter exit is torn down during
    finalisation, where its threads can abort a process whose run succeeded ("terminate called
    without an active exception", SIGABRT). So the caller drops its engine first, cyclic garbage
    that still holds groups or work (a DeepSpeed engine is full of cycles) is collected now, and
    the groups are destroyed through ``deepspeed.comm``, which also drops DeepSpeed's own clone of
    the world group.
    """
    if is_dist():
        import gc

        import deepspeed.comm

        gc.collect()
        deepspeed.comm.destroy_process_group()
        gc.collect()


def any_flags(flags: list[bool]) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks (one all-reduce).

    Used for decisions every rank must take together: skip a non-finite step,
    stop on SIGTERM, stop on collapse.
    """
    t = torch.tensor([float(f) for f in flags], dtype=torch.float32, device=comm_device())
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def sum_tensors(values: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor]:
    """Sum over ranks of every entry (any shapes, float64) in one all-reduce, on the comm device.

    Ranks may hold different keys (a modality absent from a rank's batches):
    keys and shapes are agreed first (one small object gather), and an entry
    a rank lacks counts as zeros. The results stay on the comm device: reading
    them is the caller's one host synchronisation.
    """
    local = {k: torch.as_tensor(v).detach().to(comm_device(), torch.float64) for k, v in values.items()}
    shapes = {k: tuple(v.shape) for k, v in local.items()}
    if is_dist():
        gathered: list[dict[str, tuple]] = [None] * world_size()  # type: ignore[list-item]
        dist.all_gather_object(gathered, shapes)
        shapes = {k: s for g in gathered for k, s in g.items()}
    keys = sorted(shapes)
    if not keys:
        return {}
    parts = [local[k] if k in local else torch.zeros(shapes[k], dtype=torch.float64, device=comm_device())
             for k in keys]
    flat = torch.cat([p.reshape(-1) for p in parts])  # (sum of numels,)
    if is_dist():
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return {k: f.reshape(shapes[k]) for k, f in zip(keys, flat.split([p.numel() for p in parts]))}


def means_of(host: dict[str, float]) -> dict[str, float]:
    """{"sum:k": s, "count:k": c, ...} -> {k: s / c}; a key nobody observed (count 0) is dropped."""
    return {k[4:]: v / host[f"count:{k[4:]}"] for k, v in host.items()
            if k.startswith("sum:") and host.get(f"count:{k[4:]}", 0) > 0}


def max_scalar(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_with_local_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``t`` in rank order, and the offset of this rank's rows.

    The local rows keep their autograd graph; remote rows are constants
    (open_clip's default gather: each rank's loss sees every negative, its
    backward reaches only its own embeddings). Row counts may differ between
    ranks (paired rows vary per batch), so rows are padded to the largest
    count for the all_gather and trimmed after. Every rank must call this the
    same number of times per step (the alignment loss guarantees it, also
    with 0 local rows). Matches the gather contract of
    :mod:`unimodal_free.objective.alignment`.
    """
    if not is_dist() or world_size() == 1:
        return t, 0
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=comm_device())
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    counts_i = torch.cat(counts).tolist()  # the shapes below depend on it: one host read, needed
    offset = sum(counts_i[: rank()])
    longest = max(counts_i)
    if longest == 0:
        return t, 0
    padded = t.detach().new_zeros((longest,) + tuple(t.shape[1:]), device=comm_device())
    padded[: t.shape[0]] = t.detach()
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[:c].to(t.device) for p, c in zip(parts, counts_i)]
    parts[rank()] = t  # the local slice keeps its autograd graph
    return torch.cat(parts, dim=0), offset  # (sum of rows, ...)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks, differentiable: its backward sums the gradients over ranks.

    So each rank's rows receive the gradient of every rank's loss through
    the shared statistics, as in SyncBatchNorm. Every rank must call it the
    same number of times per step. One process: ``t`` itself.
    """
    if not is_dist() or world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t.to(comm_device()), op=dist.ReduceOp.SUM).to(t.device)  # .to: differentiable
