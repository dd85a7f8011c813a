"""Training-loader throughput and padding waste on the configured (default: demo) shards.

    python -m unimodal_free.bench.loader [--config configs/joint.json] [--batches N] [--set k=v ...]

Prints samples/s, rows/s and elements/s per modality for rank 0 of a
one-rank run with ``data.num_workers`` workers, and the padding waste of the
same stream with bucketing on and off (``data.bucket_boundaries = []``), so
the cost of the reader can be set against the model's step time.
``python -m unimodal_free.bench`` reads the same measurement through
:func:`loader_throughput` (its ``loader`` section).
"""

from __future__ import annotations

import collections
import copy
import logging
import sys
import time

from unimodal_free.config import Config, DataConfig, Source, TrainConfig, load_config
from unimodal_free.modalities import MODALITIES
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors


def measure(data_cfg: DataConfig, train_cfg: TrainConfig, sources: list[Source], tokenizer, batches: int,
            warmup: int) -> dict:
    """Time ``batches`` batches after ``warmup`` (worker start-up, first shuffle-buffer fill: ``startup_s``)."""
    # torch loads with the reader: the CLI imports it only after the command line and config are checked.
    from unimodal_free.data.loader import make_train_loader

    start = time.perf_counter()
    it = make_train_loader(data_cfg, train_cfg, sources, tokenizer, rank=0, world_size=1)
    rows, elements, slots = collections.Counter(), collections.Counter(), collections.Counter()
    samples = skipped = 0
    try:
        for _ in range(warmup):
            next(it)
        startup = time.perf_counter() - start
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            samples += len({(p.keys[i]) for p in batch.parts.values() for i in range(p.rows)})
            skipped += batch.skipped
            for m, part in batch.parts.items():
                rows[m] += part.rows
                elements[m] += int((~part.padding).sum())
                slots[m] += part.padding.numel()
        seconds = time.perf_counter() - t0
    finally:
        it.close()  # stops the workers
    return {"seconds": seconds, "startup_s": startup, "samples": samples, "rows": rows, "elements": elements,
            "slots": slots, "skipped": skipped}


def loader_throughput(cfg: Config, batches: int, warmup_batches: int = 2, demo_dir: str | None = None,
                      demo_samples: tuple[int, int] | None = None) -> dict:
    """Rows/s (``samples_per_s``) and elements/s of ``make_train_loader`` (rank 0 of 1) after ``warmup_batches``.

    With no training sources configured, reads the demo shards (``demo_dir``,
    default the config's; ``demo_samples`` = (train, heldout) counts, default
    the demo's own). The warm-up absorbs worker start-up and the first
    shuffle-buffer fill; its time is reported separately as ``startup_s``.
    """
    from unimodal_free.data.demo import ensure_demo_data  # with the reader: see measure
    from unimodal_free.data.sources import resolve_sources
    from unimodal_free.data.tokenizer import load_tokenizer

    if not cfg.data.train:
        root = ensure_demo_data(demo_dir or cfg.data.demo_dir, *(demo_samples or ()))
        cfg = copy.deepcopy(cfg)
        cfg.data.demo_dir = str(root)
        cfg.data.train = [Source(path=str(root / "train"))]
        cfg.data.heldout = [Source(path=str(root / "heldout"))]
    sources = resolve_sources(cfg.data)
    tokenizer = load_tokenizer(sources.tokenizer_spec(cfg.data))
    r = measure(cfg.data, cfg.train, sources.train, tokenizer, batches, warmup_batches)
    rows, seconds = sum(r["rows"].values()), r["seconds"]
    return {
        "batches": batches,
        "rows": rows,
        "seconds": seconds,
        "samples_per_s": rows / seconds,
        "elements_per_s": sum(r["elements"].values()) / seconds,
        "startup_s": r["startup_s"],
        "skipped": r["skipped"],
        "num_workers": cfg.data.num_workers,
        "micro_batch_size": cfg.train.micro_batch_size,
        "sources": [s.path for s in cfg.data.train],
    }


def report(name: str, r: dict) -> list[str]:
    s = r["seconds"]
    total_el, total_slots = sum(r["elements"].values()), sum(r["slots"].values())
    lines = [f"{name}: {r['samples'] / s:8.1f} samples/s  {sum(r['rows'].values()) / s:8.1f} rows/s  "
             f"{total_el / s:10.0f} elements/s  padding waste {1 - total_el / max(1, total_slots):.3f}  "
             f"skipped {r['skipped']}"]
    for m in MODALITIES:
        if r["rows"][m]:
            lines.append(f"  {m:<6} {r['rows'][m] / s:8.1f} rows/s  {r['elements'][m] / s:10.0f} elements/s  "
                         f"{r['elements'][m] / r['rows'][m]:6.1f} elements/row  "
                         f"padding waste {1 - r['elements'][m] / max(1, r['slots'][m]):.3f}")
    return lines


@usage_errors()
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.bench.loader", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="JSON config (default: built-in defaults)")
    ap.add_argument("--batches", type=int, default=100, help="timed batches per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--no-compare", action="store_true", help="skip the run without bucketing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    cfg = load_config(args.config, args.set)
    from unimodal_free.data.sources import resolve_sources  # with the reader: see measure
    from unimodal_free.data.tokenizer import load_tokenizer

    try:
        sources = resolve_sources(cfg.data)  # generates the demo data first if needed, outside the timing
        tokenizer = load_tokenizer(sources.tokenizer_spec(cfg.data))
    except (ValueError, OSError) as exc:  # missing shards or tokenizer model
        raise UsageError(f"data: {exc}") from None
    print(f"micro_batch_size {cfg.train.micro_batch_size} rows, num_workers {cfg.data.num_workers}, "
          f"{args.batches} batches after {args.warmup} warm-up")
    r = measure(cfg.data, cfg.train, sources.train, tokenizer, args.batches, args.warmup)
    for line in report(f"bucketed {cfg.data.bucket_boundaries}", r):
        print(line)
    if not args.no_compare and cfg.data.bucket_boundaries:
        cfg.data.bucket_boundaries = []
        for line in report("no bucketing (FIFO)", measure(cfg.data, cfg.train, sources.train, tokenizer,
                                                          args.batches, args.warmup)):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
