"""One config's figures, in a process of its own so memory peaks don't mix.

    python -m unimodal_free.bench.config_run --config configs/joint.json --rows 32 --out OUT.json

Times the joint train step, our encoder fwd+bwd and (``--peers``) the HF
Perceiver and full-attention encoder on the same rows and element counts, all
of them and their inputs on ``--device``, and records the process's peak
memory right after the train steps (before anything else runs: peak RSS, on
CUDA peak allocated) and the step's tensor peak (:class:`LiveTensorPeak`). Writes one JSON object; MFU is computed by the caller, which owns
the matmul peak of the run.
"""

from __future__ import annotations

import json
import sys
import time

from unimodal_free import cpu_memory

cpu_memory.keep_freed_memory()  # as the trainer runs, and before torch is imported (see cpu_memory)

from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402

from unimodal_free.bench.memory import current_rss_bytes, peak_memory, step_tensor_peak  # noqa: E402
from unimodal_free.bench.ours import OursHarness  # noqa: E402
from unimodal_free.bench.peers import (  # noqa: E402
    PeerSize, full_attention_encoder, fwd_bwd_fn, hf_perceiver, peer_inputs)
from unimodal_free.bench.synthetic import synthetic_batch  # noqa: E402
from unimodal_free.bench.timing import pick_device, setup_threads, time_fn, time_interleaved  # noqa: E402
from unimodal_free.config import load_config  # noqa: E402
from unimodal_free.usage import ArgumentParser, usage_errors  # noqa: E402


@dataclass
class PeerStep:
    """A peer built for one batch: ``fn`` does its fwd+bwd over every modality sub-batch."""

    fn: Callable[[], object]
    model: torch.nn.Module
    inputs: list[tuple[torch.Tensor, torch.Tensor | None]]  # (x (B_m, M_m, width), keep (B_m, M_m) or None)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def peer_step(kind: str, size, batch, device: torch.device | str) -> PeerStep:
    """A peer and its inputs on ``device`` (same rows, element counts and padding as ``batch``)."""
    model = (hf_perceiver(size) if kind == "hf_perceiver" else full_attention_encoder(size)).to(device)
    inputs, steps = [], []
    for i, part in enumerate(batch.parts.values()):
        lengths = (~part.padding).sum(1)  # (B_m,)
        padded = bool((lengths < part.padding.shape[1]).any())
        x, keep = peer_inputs(part.rows, part.padding.shape[1], size.input_width, lengths if padded else None,
                              seed=i, device=device)
        inputs.append((x, keep))
        steps.append(fwd_bwd_fn(model, kind, x, keep))
    return PeerStep(lambda: [s() for s in steps], model, inputs)


def run(args) -> dict:
    device = pick_device(args.device)
    threads = setup_threads(args.threads, device)
    cfg = load_config(args.config, args.overrides)
    started = time.perf_counter()
    rss_before_model = current_rss_bytes()
    ours = OursHarness(cfg, device, args.precision, seed=args.seed)
    batch = synthetic_batch(cfg.data, ours.specs, args.rows, seed=args.seed).to(device)
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "device": str(device),
        "threads": threads,
        "malloc_kept": cpu_memory.applied,
        "precision": args.precision,
        "model": {"d_model": cfg.model.d_model, "num_latents": cfg.model.num_latents,
                  "num_blocks": cfg.model.num_blocks, "num_heads": cfg.model.num_heads,
                  "num_views": cfg.objective.num_views, "predictor_blocks": cfg.objective.predictor_blocks,
                  "target_space": cfg.objective.target_space},
        "params": ours.param_counts(),
        "batch": {"rows": batch.rows, "elements": batch.num_elements(), "padding_waste": batch.padding_waste(),
                  "rows_per_modality": {m: p.rows for m, p in batch.parts.items()},
                  "max_elements_per_modality": {m: int(p.padding.shape[1]) for m, p in batch.parts.items()}},
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak of the train steps, not of building the model
    step = time_fn(lambda: ours.train_step(batch), args.warmup, args.repeats, device)
    result["memory"] = {"rss_before_model_bytes": rss_before_model, **peak_memory(device),
                        # What one step's tensors hold at most (activations, gradients): any device, CPU included.
                        "step_tensor_peak_bytes": step_tensor_peak(ours, batch, cfg)}
    step["samples_per_s"] = batch.rows / step["median_s"]
    step["elements_per_s"] = batch.num_elements() / step["median_s"]
    result["train_step"] = step
    result["flops"] = ours.flops(batch)
    # Ours and the peers alternate (A B C A B C ...) so load from other processes hits all alike.
    fns = {"ours": lambda: ours.encoder_fwd_bwd(batch)}
    params = {}
    if args.peers:
        size = PeerSize.from_model_config(cfg.model)
        for kind in ("hf_perceiver", "full_attention"):
            peer = peer_step(kind, size, batch, device)
            fns[kind], params[kind] = peer.fn, peer.params
    timed = time_interleaved(fns, args.warmup, args.repeats, device)
    for name, t in timed.items():
        t["samples_per_s"] = batch.rows / t["median_s"]
    result["encoder_fwd_bwd"] = timed.pop("ours")
    if args.peers:
        result["peers"] = {kind: {**t, "params": params[kind]} for kind, t in timed.items()}
    result["wall_s"] = time.perf_counter() - started
    return result


@usage_errors()
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m unimodal_free.bench.config_run", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = run(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
