"""Training-loader throughput and padding waste on the configured (default: demo) shards.

    python -m unimodal_free.bench.loader [--config configs/joint.json] [--batches N] [--set k=v ...]

Prints samples/s, rows/s and elements/s per modality for rank 0 of a
one-rank run with ``data.num_workers`` workers, and the padding waste of the
same stream with bucketing on and off (``data.bucket_boundaries = []``), so
the cost of the reader can be set against the model's step time.
The measurement itself is ``loader_measure.py`` (``python -m unimodal_free.bench``
reads it through :func:`loader_measure.loader_throughput`).
"""

from __future__ import annotations

import logging
import sys

from unimodal_free.config import load_config
from unimodal_free.modalities import MODALITIES
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors


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
    # torch loads with the reader: only once the command line and the config keys are checked.
    from unimodal_free.bench import loader_measure

    try:
        sources, tokenizer = loader_measure.resolve_data(cfg.data)
    except (ValueError, OSError) as exc:  # missing shards or tokenizer model
        raise UsageError(f"data: {exc}") from None
    print(f"micro_batch_size {cfg.train.micro_batch_size} rows, num_workers {cfg.data.num_workers}, "
          f"{args.batches} batches after {args.warmup} warm-up")
    r = loader_measure.measure(cfg.data, cfg.train, sources.train, tokenizer, args.batches, args.warmup)
    for line in report(f"bucketed {cfg.data.bucket_boundaries}", r):
        print(line)
    if not args.no_compare and cfg.data.bucket_boundaries:
        cfg.data.bucket_boundaries = []
        fifo = loader_measure.measure(cfg.data, cfg.train, sources.train, tokenizer, args.batches, args.warmup)
        for line in report("no bucketing (FIFO)", fifo):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
