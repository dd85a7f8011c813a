"""Data pipeline throughput on the demo shards: can the reader keep the step fed?"""

from __future__ import annotations

import copy
import time

from unimodal_free.config import Config, Source


def loader_throughput(cfg: Config, batches: int, warmup_batches: int = 2, demo_dir: str | None = None,
                      demo_samples: tuple[int, int] | None = None) -> dict:
    """Samples/s and elements/s of ``make_train_loader`` (rank 0 of 1) after ``warmup_batches``.

    With no training sources configured, reads the demo shards (``demo_dir``,
    default the config's; ``demo_samples`` = (train, heldout) counts, default
    the demo's own). The warm-up absorbs worker start-up and the first
    shuffle-buffer fill; its time is reported separately as ``startup_s``.
    """
    from unimodal_free.data.demo import ensure_demo_data
    from unimodal_free.data.reader import make_train_loader
    from unimodal_free.data.tokenizer import load_tokenizer

    if not cfg.data.train:
        root = ensure_demo_data(demo_dir or cfg.data.demo_dir, *(demo_samples or ()))
        cfg = copy.deepcopy(cfg)
        cfg.data.demo_dir = str(root)
        cfg.data.train = [Source(path=str(root / "train"))]
        cfg.data.heldout = [Source(path=str(root / "heldout"))]
    tokenizer = load_tokenizer(cfg.data.tokenizer, cfg.data.demo_dir)
    start = time.perf_counter()
    it = make_train_loader(cfg, tokenizer, rank=0, world_size=1)
    for _ in range(warmup_batches):
        next(it)
    startup = time.perf_counter() - start
    rows = elements = skipped = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        rows += batch.rows
        elements += batch.num_elements()
        skipped += batch.skipped
    seconds = time.perf_counter() - start
    del it
    return {
        "batches": batches,
        "rows": rows,
        "seconds": seconds,
        "samples_per_s": rows / seconds,
        "elements_per_s": elements / seconds,
        "startup_s": startup,
        "skipped": skipped,
        "num_workers": cfg.data.num_workers,
        "micro_batch_size": cfg.train.micro_batch_size,
        "sources": [s.path for s in cfg.data.train],
    }
