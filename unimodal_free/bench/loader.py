"""Data pipeline throughput on the demo shards: can the reader keep the step fed?"""

from __future__ import annotations

import time

from unimodal_free.config import Config


def loader_throughput(cfg: Config, batches: int, warmup_batches: int = 2) -> dict:
    """Samples/s and elements/s of ``make_train_loader`` (rank 0 of 1) after ``warmup_batches``.

    The warm-up absorbs worker start-up and the first shuffle-buffer fill; its
    time is reported separately as ``startup_s``.
    """
    from unimodal_free.data.demo import ensure_demo_data
    from unimodal_free.data.reader import make_train_loader
    from unimodal_free.data.tokenizer import load_tokenizer

    ensure_demo_data(cfg.data.demo_dir)
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
    }
