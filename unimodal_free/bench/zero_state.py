"""Per-rank optimizer-state bytes under ZeRO 0 and ZeRO 2: run under the DeepSpeed launcher.

    deepspeed --num_gpus 2 unimodal_free/bench/zero_state.py --config configs/joint.json --out OUT.json

Each rank builds the student, wraps it in a DeepSpeed engine for each stage in
turn (the trainer's optimizer, DeepSpeed dict and 0-dim parameter workaround),
takes one real optimizer step on a synthetic batch (Adam state is created
lazily) and counts the bytes of optimizer state it holds: Adam moments plus, for
ZeRO >= 1, the fp32 master partition. Rank 0 writes the per-rank figures.
"""

from __future__ import annotations

import copy
import json
import sys

import deepspeed
import torch

from unimodal_free.batch import modality_specs
from unimodal_free.bench.synthetic import SYNTHETIC_VOCAB, synthetic_batch
from unimodal_free.config import load_config
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent
from unimodal_free.train.dist import init_deepspeed_distributed, shutdown
from unimodal_free.train.ds_compat import lift_zero_dim_params
from unimodal_free.train.ds_config import build_ds_config
from unimodal_free.train.optim import build_optimizer
from unimodal_free.usage import ArgumentParser, usage_errors


def state_bytes(optimizer) -> dict:
    """Bytes held by an optimizer (a torch one or DeepSpeed's ZeRO wrapper around one)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    moments = 0
    for state in inner.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dim() > 0:
                moments += value.numel() * value.element_size()
    master = 0
    for part in getattr(optimizer, "single_partition_of_fp32_groups", []) or []:
        master += part.numel() * part.element_size()
    return {"moments": moments, "master": master, "total": moments + master}


def measure_stage(cfg, stage: int, world_size: int) -> dict:
    torch.manual_seed(cfg.train.seed)
    specs = modality_specs(cfg.data, SYNTHETIC_VOCAB)
    student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, specs)
    lift_zero_dim_params(student)  # as the trainer does: DeepSpeed cannot move 0-dim parameters
    teacher = EMATeacher(student, cfg.objective)
    cfg = copy.deepcopy(cfg)
    cfg.deepspeed.zero_stage = stage
    cfg.train.precision = "fp32"
    optimizer = build_optimizer(student, cfg.optim, check_finite=stage == 0)
    engine, ds_opt, _, _ = deepspeed.initialize(model=student, optimizer=optimizer,
                                                config=build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, world_size))
    rank = torch.distributed.get_rank()
    batch = synthetic_batch(cfg.data, specs, rows=min(cfg.train.micro_batch_size, 6), seed=rank)
    gen = torch.Generator().manual_seed(rank)
    out = engine.module(batch, teacher.module, gen)
    engine.backward(out.loss)
    engine.step()
    params = sum(p.numel() * p.element_size() for p in student.parameters())
    return {"param_bytes": params, **state_bytes(ds_opt)}


@usage_errors()
def main(argv=None) -> int:
    parser = ArgumentParser(prog="unimodal_free/bench/zero_state.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--stages", default="0,2")
    parser.add_argument("--out", required=True)
    parser.add_argument("--local_rank", type=int, default=None)  # passed by the launcher
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    init_deepspeed_distributed("gloo" if not torch.cuda.is_available() else None)
    try:
        measure_stages(cfg, [int(s) for s in args.stages.split(",")], args.out)
    finally:
        shutdown()  # gloo groups left to interpreter exit can abort a finished run (see dist.shutdown)
    return 0


def measure_stages(cfg, stages: list[int], out: str) -> None:
    """Measure each stage on every rank; rank 0 writes the gathered figures to ``out``."""
    world_size = torch.distributed.get_world_size()
    per_stage = {}
    for stage in stages:
        mine = measure_stage(cfg, stage, world_size)
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, mine)
        per_stage[str(stage)] = gathered
    if torch.distributed.get_rank() == 0:
        with open(out, "w") as f:
            json.dump({"world_size": world_size, "per_stage": per_stage}, f, indent=2)
        for stage, ranks in per_stage.items():
            print(f"zero {stage}: optimizer state bytes per rank = {[r['total'] for r in ranks]}", flush=True)
    torch.distributed.barrier()


if __name__ == "__main__":
    sys.exit(main())
