"""WebDataset shards -> mixed-modality Batches, for training and for eval: the DataLoader stage.

The stages it runs: ``sources.py`` beside it (where the shards are, the
demo default), ``reading/samples.py`` (reading tar shards, shuffling, mixing,
decoding; bad samples skipped and counted), ``bucketing.py`` beside it (rows -> batches).

Training stream, per (rank, worker)::

    for each source: resampled shard URLs (seeded) -> tar samples -> shuffle buffer
    -> weighted mix of sources -> decode + featurize (skip and count bad samples; training pictures
       augmented when data.image_augment.enabled, from the segment's own "augment" generator)
    -> split pairs into rows -> pool -> bucketed batches of exactly B rows

Determinism and exact resume. The stream of one (rank, logical worker) is cut
into *segments* of ``segment_batches`` batches. Each segment is a fresh
pipeline reseeded from ``(seed, rank, worker, segment)``; nothing carries over
a segment boundary. Resuming at (the worker's local) batch k therefore rebuilds only segment
``k // S`` and discards its first ``k % S`` batches: exact, with a bounded
cost (at most S batches of decoding), whatever k is. The price is that each
segment refills its shuffle buffer and abandons the rest of its last shards;
with resampled shards that changes nothing statistically. Resume needs the
same ``num_workers`` and world size as the run that wrote the checkpoint.

A DataLoader with W workers hands out batches round-robin (worker 0, 1, ...),
so uninterrupted global batch b comes from worker ``b % W`` as its local batch
``b // W``. When resuming at k, DataLoader worker j plays *logical* worker
``(k + j) % W`` from local batch ``(k + j) // W``: batch k comes out first.

Epochs. The training stream is infinite by contract (the trainer counts
steps, not epochs), so there is no ``with_epoch`` cut: in resampled mode every
segment is already an independent draw of shards and an epoch boundary would
change nothing. ``data.epoch_samples`` is therefore not read here; it only
names a nominal epoch for the trainer's ``train/epoch`` scalar (rows seen /
epoch_samples).
The non-resampled mode is one exact pass, reseeded by its ``epoch`` argument.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import signal
from typing import Any, Iterator, NamedTuple

import torch

from unimodal_free.batch import Batch, Row, collate_elements
from unimodal_free.config import DataConfig, Source, TrainConfig
from unimodal_free.data.loading.bucketing import POOL_BATCHES, Bucketer, bucketed_batches
from unimodal_free.data.reading.handlers import DeltaCounter, SkipCounter
from unimodal_free.data.reading.samples import (
    NoDecodableSample,
    decode_units,
    mix_sources,
    resampled_samples,
    shuffle_samples,
    single_pass_samples,
)
from unimodal_free.data.loading.sources import expand_shards, split_shards

# Batches per reseeded segment of a training stream: resume decodes at most this many batches.
SEGMENT_BATCHES = 200


def _seed(*parts: Any) -> int:
    """A stable 64-bit seed from any tuple (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


# ---------------------------------------------------------------- training


class _TrainStream(torch.utils.data.IterableDataset):
    """The training batch stream of one rank; DataLoader workers each take one logical worker."""

    def __init__(self, data_cfg: DataConfig, train_cfg: TrainConfig, tokenizer, rank: int, world_size: int,
                 start_batch: int, shard_lists: list[tuple[str, list[str], float]], resampled: bool,
                 segment_batches: int, epoch: int):
        self.data_cfg, self.train_cfg, self.tokenizer = data_cfg, train_cfg, tokenizer
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.shard_lists, self.resampled = shard_lists, resampled
        self.segment_batches, self.epoch = segment_batches, epoch
        self.num_workers = max(1, data_cfg.num_workers)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        j = info.id if info is not None else 0
        worker = (self.start_batch + j) % self.num_workers
        local_start = (self.start_batch + j) // self.num_workers
        counter = SkipCounter(f"rank {self.rank} worker {worker}")
        try:
            if self.resampled:
                yield from self._resampled(worker, local_start, counter)
            else:
                yield from itertools.islice(self._single_pass(worker, counter), local_start, None)
        except NoDecodableSample as exc:  # handed over as an item: a worker's exception would carry its traceback
            names = ", ".join(repr(name) for name, _, _ in self.shard_lists)
            yield SourceFailure(f"training sources {names} ({counter.where}): {exc}")

    def _pipeline(self, streams: list[Iterator[dict]], rng_for, counter: SkipCounter) -> Iterator[Batch]:
        data_cfg, batch_rows = self.data_cfg, self.train_cfg.micro_batch_size
        weights = [w for _, _, w in self.shard_lists]
        shuffled = [shuffle_samples(s, data_cfg.shuffle_buffer, rng_for("shuffle", i)) for i, s in enumerate(streams)]
        mixed = mix_sources(shuffled, weights, rng_for("mix"))
        units = decode_units(mixed, data_cfg, self.tokenizer, train=True, rng=rng_for("decode"), counter=counter,
                             max_in_row=data_cfg.max_skips_in_row, augment_rng=rng_for("augment"))
        bucketer = Bucketer(data_cfg.bucket_boundaries, batch_rows)
        return bucketed_batches(units, bucketer, POOL_BATCHES * batch_rows, counter)

    def _resampled(self, worker: int, local_start: int, counter: SkipCounter) -> Iterator[Batch]:
        seed, S = self.train_cfg.seed, self.segment_batches
        segment, skip = divmod(local_start, S)
        while True:
            def rng_for(*purpose, _segment=segment):
                return random.Random(_seed(seed, self.rank, worker, _segment, *purpose))

            streams = [resampled_samples(urls, rng_for("shards", i), counter, name, self.data_cfg)
                       for i, (name, urls, _) in enumerate(self.shard_lists)]
            batches = self._pipeline(streams, rng_for, counter)
            try:
                yield from itertools.islice(batches, skip, S)
            finally:
                batches.close()  # closes the open shards (and any curl/pipe processes) of this segment
            segment, skip = segment + 1, 0

    def _single_pass(self, worker: int, counter: SkipCounter) -> Iterator[Batch]:
        seed = self.train_cfg.seed

        def rng_for(*purpose):
            return random.Random(_seed(seed, self.rank, worker, "epoch", self.epoch, *purpose))

        streams = []
        for i, (name, urls, _) in enumerate(self.shard_lists):
            mine = split_shards(urls, self.rank, self.world_size, worker, self.num_workers, name)
            rng_for("shards", i).shuffle(mine)
            streams.append(single_pass_samples(mine, counter, self.data_cfg))
        return self._pipeline(streams, rng_for, counter)


class SourceFailure(NamedTuple):
    """What a worker yields instead of a batch when its sources cannot go on (see TrainBatches)."""

    message: str


class DataSourceError(RuntimeError):
    """The training sources cannot produce batches; the message is one line naming them and why."""


class TrainBatches:
    """This rank's training batches, and the one place that stops its DataLoader workers.

    ``next()`` raises :class:`DataSourceError` (one line) when a worker reports
    a :class:`SourceFailure`. ``close()`` must run before the process exits
    (the trainer does it in ``finally``): workers ignore SIGTERM (see
    ``_ignore_stop_signals``), so multiprocessing's exit-time terminate + join
    would wait on them forever; here they get the done event, a few seconds,
    and then SIGKILL (their pipe/curl children die with them, see reading/streams.py).
    """

    def __init__(self, dataset: torch.utils.data.IterableDataset, num_workers: int):
        if num_workers == 0:
            self._it: Iterator = iter(dataset)
        else:
            self._it = iter(torch.utils.data.DataLoader(
                dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                prefetch_factor=4, worker_init_fn=_ignore_stop_signals,
            ))

    def __iter__(self) -> "TrainBatches":
        return self

    def __next__(self) -> Batch:
        item = next(self._it)
        if isinstance(item, SourceFailure):
            self.close()
            raise DataSourceError(item.message)
        return item

    def close(self) -> None:
        it, self._it = self._it, iter(())
        workers = list(getattr(it, "_workers", []))
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # done event, then join with a timeout; its SIGTERM is ignored by ours
        elif hasattr(it, "close"):
            it.close()  # in-process generator: closes open shards and their child processes
        for w in workers:
            if w.is_alive():
                w.kill()
            w.join()


def _identity(x):
    return x


def _ignore_stop_signals(worker_id: int) -> None:
    """Leave SIGTERM/SIGINT to the training process, which saves and then shuts workers down.

    The launcher, a scheduler or Ctrl-C signal the whole process group; a worker
    dying on it would crash the rank before its checkpoint. Workers still exit
    when their parent does.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_train_loader(data_cfg: DataConfig, train_cfg: TrainConfig, sources: list[Source], tokenizer, rank: int,
                      world_size: int, start_batch: int = 0, *, resampled: bool = True, epoch: int = 0,
                      segment_batches: int = SEGMENT_BATCHES) -> TrainBatches:
    """This rank's training batches from ``sources``, ``train.micro_batch_size`` rows each.

    ``sources`` are the resolved train sources (``resolve_sources(data_cfg).train``:
    the demo's when none are configured). ``resampled=True`` (training): infinite,
    deterministic given ``train.seed`` and ``rank``; ``start_batch=k`` yields exactly what an
    uninterrupted run yields from its k-th batch on. ``resampled=False``: one
    seeded pass over this rank's split of every source (``epoch`` reseeds the
    order), each shard read by exactly one (rank, worker); the last batch may
    be short.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"make_train_loader: rank {rank} outside world_size {world_size}")
    shard_lists = [(src.path, expand_shards(src), src.weight) for src in sources]
    if not resampled:  # fail here, in the main process, not as a hang in a worker
        for name, urls, _ in shard_lists:
            split_shards(urls, rank, world_size, 0, max(1, data_cfg.num_workers), name)
    dataset = _TrainStream(data_cfg, train_cfg, tokenizer, rank, world_size, start_batch, shard_lists, resampled,
                           segment_batches, epoch)
    return TrainBatches(dataset, data_cfg.num_workers)


# ---------------------------------------------------------------- eval


class EvalLoader:
    """Finite, in-order eval batches; ``skipped`` is the running total of skipped samples."""

    def __init__(self, data_cfg: DataConfig, sources: list[Source], tokenizer, rank: int, world_size: int,
                 batch_size: int):
        self.data_cfg, self.tokenizer = data_cfg, tokenizer
        self.urls = [url for src in sources for url in expand_shards(src)]
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.counter = SkipCounter(f"eval rank {rank}")

    @property
    def skipped(self) -> int:
        return self.counter.count

    def __iter__(self) -> Iterator[Batch]:
        samples = single_pass_samples(self.urls, self.counter, self.data_cfg)
        mine = itertools.islice(samples, self.rank, None, self.world_size)  # raw sample i -> rank i % world
        units = decode_units(mine, self.data_cfg, self.tokenizer, train=False, rng=None, counter=self.counter)
        delta = DeltaCounter(self.counter)
        group: list[list[Row]] = []
        for unit in units:
            if len(group) == self.batch_size:  # emit only now, so trailing skips land in a batch
                yield self._collate(group, delta)
                group = []
            group.append(unit)
        if group:
            yield self._collate(group, delta)

    @staticmethod
    def _collate(group: list[list[Row]], delta: DeltaCounter) -> Batch:
        batch = collate_elements([row for unit in group for row in unit])
        batch.skipped = delta.take()
        return batch


def make_eval_loader(data_cfg: DataConfig, sources: list[Source], tokenizer, batch_size: int, rank: int = 0,
                     world_size: int = 1) -> EvalLoader:
    """Held-out batches in shard order, no shuffle, every modality and caption of a sample kept.

    ``batch_size`` counts samples (the eval callers use ``train.micro_batch_size``); a
    sample's rows (one per modality, one per caption) share its pair id and
    never straddle two batches. With several ranks, raw sample i goes to rank
    ``i % world_size``.
    """
    return EvalLoader(data_cfg, sources, tokenizer, rank, world_size, batch_size)
