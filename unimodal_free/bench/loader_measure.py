"""What the loader benchmark measures: samples/s and elements/s of ``make_train_loader`` (rank 0 of 1).

The command line is ``python -m unimodal_free.bench.loader`` (``loader.py``,
which checks its flags and config before this module brings torch in with the
reader); ``python -m unimodal_free.bench`` calls :func:`loader_throughput` for
its ``loader`` section.
"""

from __future__ import annotations

import collections
import time

from unimodal_free.config import Config, DataConfig, Source, TrainConfig
from unimodal_free.data.demo.build import ensure_demo_data
from unimodal_free.data.loading.loader import make_train_loader
from unimodal_free.data.loading.sources import DataSources, resolve_sources
from unimodal_free.data.reading.tokenizer import Tokenizer, load_tokenizer


def resolve_data(data_cfg: DataConfig) -> tuple[DataSources, Tokenizer]:
    """(sources, tokenizer) of the data config: generates the demo data first if needed, outside the timing."""
    sources = resolve_sources(data_cfg)
    return sources, load_tokenizer(sources.tokenizer_spec(data_cfg))


def measure(data_cfg: DataConfig, train_cfg: TrainConfig, sources: list[Source], tokenizer: Tokenizer, batches: int,
            warmup: int) -> dict:
    """Time ``batches`` batches after ``warmup`` (worker start-up, first shuffle-buffer fill: ``startup_s``)."""
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
    if cfg.data.train:
        sources, tokenizer = resolve_data(cfg.data)
    else:  # the demo folder resolved here, once (its size may differ from the config's default)
        root = ensure_demo_data(demo_dir or cfg.data.demo_dir, *(demo_samples or ()))
        sources = DataSources([Source(path=str(root / "train"))], [Source(path=str(root / "heldout"))], root)
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
        "sources": [s.path for s in sources.train],
    }
