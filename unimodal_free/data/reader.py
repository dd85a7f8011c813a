"""WebDataset shards -> mixed-modality Batches, for training and for eval.

Training stream, per (rank, worker)::

    for each source: resampled shard URLs (seeded) -> tar samples -> shuffle buffer
    -> weighted mix of sources -> decode + featurize (skip and count bad samples)
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

import bisect
import glob
import gzip
import hashlib
import itertools
import signal
import os
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Optional

import torch

from unimodal_free.batch import Batch, collate_elements
from unimodal_free.config import Config, Source
from unimodal_free.data.elements import KNOWN_EXTS, DecodeError, Row, sample_rows
from unimodal_free.data.handlers import DeltaCounter, SkipCounter, describe
from unimodal_free.data.streams import open_shard

# Batches per reseeded segment of a training stream: resume decodes at most this many batches.
SEGMENT_BATCHES = 200
# The batching pool holds this many batches' worth of rows to pick bucketed batches from.
POOL_BATCHES = 4
# A resampled source whose last this-many shards gave no sample is broken, not unlucky.
MAX_EMPTY_SHARDS = 50
SHARD_EXTS = (".tar", ".tar.gz", ".tgz")
# A raw sample the reader refuses carries this key (value: the reason); _decode counts it.
SKIP = "__skip__"
_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# ---------------------------------------------------------------- sources


def _is_url(path: str) -> bool:
    return bool(_URL_SCHEME.match(path)) and not path.startswith("file:")


def expand_shards(source: Source | str) -> list[str]:
    """A source (dir, glob, brace pattern, URL) -> its shard URLs; local ones must exist."""
    import braceexpand

    path = source.path if isinstance(source, Source) else source
    if not path:
        raise ValueError("data source: empty path")
    if _is_url(path):  # pipe:, http(s)://, ... : brace-expanded, existence checked when read
        return list(braceexpand.braceexpand(path))
    urls: list[str] = []
    for item in braceexpand.braceexpand(os.path.expanduser(path.removeprefix("file://"))):
        if os.path.isdir(item):
            urls += sorted(str(p) for p in Path(item).iterdir() if p.name.endswith(SHARD_EXTS))
        elif glob.has_magic(item):
            urls += sorted(glob.glob(item))
        elif os.path.isfile(item):
            urls.append(item)
        else:
            raise ValueError(f"data source {path!r}: {item} does not exist")
    if not urls:
        raise ValueError(f"data source {path!r}: no shards found ({'/'.join(SHARD_EXTS)})")
    return urls


def resolve_sources(data_cfg) -> tuple[list[Source], list[Source]]:
    """Configured train/heldout sources, with the demo data filled in where empty.

    Every source is expanded once here so a typo fails now, naming the source,
    not inside a DataLoader worker.
    """
    train, heldout = list(data_cfg.train), list(data_cfg.heldout)
    if not train or not heldout:
        from unimodal_free.data.demo import ensure_demo_data

        root = Path(ensure_demo_data(os.path.expanduser(data_cfg.demo_dir)))
        train = train or [Source(path=str(root / "train"), weight=1.0)]
        heldout = heldout or [Source(path=str(root / "heldout"), weight=1.0)]
    for src in train + heldout:
        expand_shards(src)
    return train, heldout


# ---------------------------------------------------------------- reading tar shards


def _split_name(name: str) -> tuple[Optional[str], Optional[str]]:
    """'dir/key.ext.gz' -> ('dir/key', 'ext.gz') (WebDataset's rule: the key ends at the first dot)."""
    base = name.rsplit("/", 1)
    stem, sep, ext = base[-1].partition(".")
    if not sep or not stem:
        return None, None
    return (base[0] + "/" + stem if len(base) == 2 else stem), ext.lower()


def read_shard(url: str, counter: SkipCounter, data_cfg) -> Iterator[dict[str, Any]]:
    """Stream the samples of one tar shard (local path, pipe:, http...).

    A shard that cannot be opened, stalls for ``data.read_timeout_s``, or
    breaks mid-stream (truncated download, corrupt tar), counts as one skipped
    sample: the sample being assembled when it broke is dropped (it may be
    incomplete) and reading moves to the next shard. Files in a sample are
    grouped by consecutive key, as WebDataset does.

    Cost per sample is bounded from the tar headers, before any data is read:
    members of extensions no modality uses are skipped unread; a member over
    ``data.max_member_bytes`` (of any extension) refuses its sample and ends
    the shard (stepping over it would still cost its size in reading and
    decompressing); a second file of the same extension and a key that an
    earlier sample of the shard already had refuse their sample. Refused
    samples are yielded with a ``SKIP`` reason (and no data) for ``_decode``
    to count.
    """
    stream = None
    current: Optional[dict[str, Any]] = None
    seen: set[str] = set()
    n = 0
    try:
        stream = open_shard(url, data_cfg.read_timeout_s)
        fileobj, mode = _uncompressed(stream)
        with tarfile.open(fileobj=fileobj, mode=mode, bufsize=_TAR_BUFSIZE) as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = _split_name(info.name)
                if info.size > data_cfg.max_member_bytes:
                    if current is not None and current["__key__"] != key:
                        yield current
                    yield {"__key__": key or info.name, "__url__": url,
                           SKIP: f"{info.name} has {info.size} bytes > data.max_member_bytes="
                                 f"{data_cfg.max_member_bytes} (rest of the shard not read)"}
                    current = None
                    return
                if key is None or key.rsplit("/", 1)[-1].startswith("__") or ext not in KNOWN_EXTS:
                    continue  # tarfile steps over the data (at most max_member_bytes) in bounded blocks
                if current is None or current["__key__"] != key:
                    if current is not None:
                        n += 1
                        yield current
                    current = {"__key__": key, "__url__": url}
                    if key in seen:
                        current[SKIP] = "duplicate key (an earlier sample of this shard has it)"
                    seen.add(key)
                if SKIP in current:
                    continue
                if ext in current:
                    current = {"__key__": key, "__url__": url, SKIP: f"duplicate .{ext} file"}  # drops what was read
                else:
                    current[ext] = tar.extractfile(info).read()
            if current is not None:
                n += 1
                yield current
                current = None
    except Exception as exc:  # GeneratorExit is a BaseException: closing the generator is not an error
        counter.skip(f"{url} (after {n} samples)", f"shard unreadable: {describe(exc)}")
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass  # a pipe's non-zero exit was already reported by the read that failed


# Tar reads in 1 MiB blocks: stepping over a skipped member is a few calls per MiB, not thousands.
_TAR_BUFSIZE = 1 << 20


class _Prefixed:
    """A stream with its first bytes (already read to sniff the format) put back in front."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
            else:
                out, self.head = self.head[:n], self.head[n:]
            return out
        return self.stream.read(n)


def _uncompressed(stream) -> tuple[Any, str]:
    """(readable, tarfile mode). Gzip goes through ``gzip.GzipFile``, which inflates in bounded
    pieces; tarfile's own stream inflater keeps up to ~1000x its read size in one buffer and
    copies it on every read (a highly compressed member took minutes to step over)."""
    head = b""
    while len(head) < 2 and (chunk := stream.read(2 - len(head))):
        head += chunk
    fileobj = _Prefixed(head, stream)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fileobj, mode="rb"), "r|"
    return fileobj, "r|*"  # plain tar (or bz2/xz, which tarfile detects itself)


def _seed(*parts: Any) -> int:
    """A stable 64-bit seed from any tuple (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def _shuffle(samples: Iterable[Any], bufsize: int, rng: random.Random, initial: int = 100) -> Iterator[Any]:
    """Seeded buffer shuffle (WebDataset's algorithm): start after ``initial``, grow to ``bufsize``."""
    if bufsize <= 1:
        yield from samples
        return
    buf: list[Any] = []
    initial = min(initial, bufsize)
    for sample in samples:
        buf.append(sample)
        if len(buf) < initial:
            continue
        i = rng.randrange(len(buf))
        buf[i], buf[-1] = buf[-1], buf[i]
        if len(buf) >= bufsize:
            yield buf.pop()
        elif rng.random() < 0.5:  # while growing, emit about every other sample
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


class NoDecodableSample(RuntimeError):
    """A training source yields nothing usable: broken, not unlucky. One line, raised in the reader."""


def _resampled_samples(urls: list[str], rng: random.Random, counter: SkipCounter, name: str,
                       data_cfg) -> Iterator[dict]:
    """Endless samples from shards drawn with replacement (every rank does the same number of steps)."""
    empty = 0
    while True:
        url = urls[rng.randrange(len(urls))]
        got = False
        for sample in read_shard(url, counter, data_cfg):
            got = True
            yield sample
        empty = 0 if got else empty + 1
        if empty >= MAX_EMPTY_SHARDS:
            raise NoDecodableSample(
                f"data source {name!r}: the last {empty} shards read gave no sample ({counter.reasons_line()})"
            )


def _single_pass_samples(urls: list[str], counter: SkipCounter, data_cfg) -> Iterator[dict]:
    for url in urls:
        yield from read_shard(url, counter, data_cfg)


def _mix(streams: list[Iterator[dict]], weights: list[float], rng: random.Random) -> Iterator[dict]:
    """Draw each sample from a source with probability proportional to its weight; drop exhausted ones."""
    streams, weights = list(streams), list(weights)
    while streams:
        i = rng.choices(range(len(streams)), weights=weights)[0] if len(streams) > 1 else 0
        try:
            yield next(streams[i])
        except StopIteration:
            del streams[i], weights[i]


def split_shards(urls: list[str], rank: int, world_size: int, worker: int, num_workers: int, name: str) -> list[str]:
    """This (rank, worker)'s share of a shard list: ``urls[rank*W + worker :: world*W]``."""
    slots = world_size * num_workers
    if len(urls) < slots:
        raise ValueError(
            f"data source {name!r}: {len(urls)} shards cannot be split over {world_size} ranks x "
            f"{num_workers} workers = {slots} readers; write more (smaller) shards, lower "
            f"data.num_workers, or read it resampled"
        )
    return urls[rank * num_workers + worker :: slots]


# ---------------------------------------------------------------- rows -> batches


def _decode(samples: Iterable[dict], cfg: Config, tokenizer, train: bool, rng: Optional[random.Random],
            counter: SkipCounter, max_in_row: Optional[int] = None) -> Iterator[list[Row]]:
    """Raw samples -> list of rows per sample (a *unit*: a pair's rows stay together); bad ones counted.

    ``max_in_row``: that many skips without a decodable sample between them raise
    :class:`NoDecodableSample` (training: the stream is endless, so a source that
    decodes nothing would otherwise loop forever).
    """
    for sample in samples:
        if SKIP in sample:
            counter.skip(f"{sample['__url__']}:{sample['__key__']}", sample[SKIP])
        else:
            try:
                rows = sample_rows(sample, cfg.data, tokenizer, train=train, rng=rng)
            except DecodeError as exc:
                counter.skip(exc.key, exc.reason)
            else:
                counter.decoded()
                yield rows
                continue
        if max_in_row is not None and counter.in_row >= max_in_row:
            raise NoDecodableSample(
                f"no decodable sample in the last {counter.in_row} read (data.max_skips_in_row={max_in_row}; "
                f"{counter.reasons_line()})"
            )


@dataclass
class _Sub:
    """Running state of one modality inside a batch being assembled."""

    rows: int = 0
    longest: int = 0
    bucket: int = -1


class Bucketer:
    """A pool of units (a sample's rows) that hands out B-row batches with little padding.

    The oldest unit seeds every batch (nothing waits longer than the pool
    turns over); then the unit whose rows add the least padding joins, ranked
    by (rows falling outside the batch's length bucket for their modality,
    padding slots added per row, age). A modality not yet in the batch costs
    nothing, so batches mix modalities, and a pair's rows join together, so
    the alignment loss sees them. Only when no unit fits the last free rows is
    one split (its other rows go back to the pool). No boundaries = FIFO.

    Units are grouped by signature (modality and length bucket of each row) and
    only the oldest unit of each group is scored, so a pick costs O(groups),
    not O(pool).
    """

    def __init__(self, boundaries: list[int], batch_rows: int):
        self.boundaries = sorted(boundaries)
        self.batch_rows = batch_rows
        self.groups: dict[tuple, list[tuple[int, list[Row]]]] = {}  # signature -> [(age, unit)] by age
        self.rows = 0
        self._age = 0

    def bucket(self, n: int) -> int:
        return bisect.bisect_left(self.boundaries, n)

    def _put(self, age: int, unit: list[Row]) -> None:
        sig = tuple((e.modality, self.bucket(e.num_elements)) for e, _, _ in unit)
        bisect.insort(self.groups.setdefault(sig, []), (age, unit), key=lambda t: t[0])
        self.rows += len(unit)

    def add(self, unit: list[Row]) -> None:
        self._put(self._age, unit)
        self._age += 1

    def _cost(self, unit: list[Row], subs: dict[str, _Sub]) -> tuple[int, float]:
        outside, added = 0, 0
        for elements, _, _ in unit:
            sub = subs.get(elements.modality)
            if sub is None:
                continue
            n = elements.num_elements
            outside += self.bucket(n) != sub.bucket
            added += sub.longest - n if n <= sub.longest else sub.rows * (n - sub.longest)
        return outside, added / len(unit)

    def take(self) -> list[Row]:
        """Remove and return one batch's rows (``batch_rows``, fewer only when the pool runs dry)."""
        batch: list[Row] = []
        subs: dict[str, _Sub] = {}
        while self.groups and len(batch) < self.batch_rows:
            free = self.batch_rows - len(batch)
            heads = [(g[0][0], sig) for sig, g in self.groups.items()]  # (age, signature) of each group's oldest
            if self.boundaries and batch:
                fitting = [h for h in heads if len(h[1]) <= free] or heads
                sig = min(fitting, key=lambda h: (*self._cost(self.groups[h[1]][0][1], subs), h[0]))[1]
            else:
                sig = min(heads)[1]
            age, unit = self.groups[sig].pop(0)
            if not self.groups[sig]:
                del self.groups[sig]
            self.rows -= len(unit)
            if len(unit) > free:  # split: the rest keeps its age and goes back to the pool
                unit, rest = unit[:free], unit[free:]
                self._put(age, rest)
            for row in unit:
                sub = subs.setdefault(row[0].modality, _Sub(bucket=self.bucket(row[0].num_elements)))
                sub.rows += 1
                sub.longest = max(sub.longest, row[0].num_elements)
                batch.append(row)
        return batch


def _batches(units: Iterator[list[Row]], bucketer: Bucketer, pool_rows: int, counter: SkipCounter) -> Iterator[Batch]:
    """Pool units, emit bucketed batches; each Batch carries the skips since the previous one."""
    exhausted = False
    delta = DeltaCounter(counter)
    while True:
        while not exhausted and bucketer.rows < pool_rows:
            try:
                bucketer.add(next(units))
            except StopIteration:
                exhausted = True
        if not bucketer.rows:
            return
        batch = collate_elements(bucketer.take())
        batch.skipped = delta.take()
        yield batch


# ---------------------------------------------------------------- training


class _TrainStream(torch.utils.data.IterableDataset):
    """The training batch stream of one rank; DataLoader workers each take one logical worker."""

    def __init__(self, cfg: Config, tokenizer, rank: int, world_size: int, start_batch: int,
                 shard_lists: list[tuple[str, list[str], float]], resampled: bool, segment_batches: int,
                 epoch: int):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.shard_lists, self.resampled = shard_lists, resampled
        self.segment_batches, self.epoch = segment_batches, epoch
        self.num_workers = max(1, cfg.data.num_workers)

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
        cfg = self.cfg
        weights = [w for _, _, w in self.shard_lists]
        shuffled = [_shuffle(s, cfg.data.shuffle_buffer, rng_for("shuffle", i)) for i, s in enumerate(streams)]
        mixed = _mix(shuffled, weights, rng_for("mix"))
        units = _decode(mixed, cfg, self.tokenizer, train=True, rng=rng_for("decode"), counter=counter,
                        max_in_row=cfg.data.max_skips_in_row)
        bucketer = Bucketer(cfg.data.bucket_boundaries, cfg.train.micro_batch_size)
        return _batches(units, bucketer, POOL_BATCHES * cfg.train.micro_batch_size, counter)

    def _resampled(self, worker: int, local_start: int, counter: SkipCounter) -> Iterator[Batch]:
        seed, S = self.cfg.train.seed, self.segment_batches
        segment, skip = divmod(local_start, S)
        while True:
            def rng_for(*purpose, _segment=segment):
                return random.Random(_seed(seed, self.rank, worker, _segment, *purpose))

            streams = [_resampled_samples(urls, rng_for("shards", i), counter, name, self.cfg.data)
                       for i, (name, urls, _) in enumerate(self.shard_lists)]
            batches = self._pipeline(streams, rng_for, counter)
            try:
                yield from itertools.islice(batches, skip, S)
            finally:
                batches.close()  # closes the open shards (and any curl/pipe processes) of this segment
            segment, skip = segment + 1, 0

    def _single_pass(self, worker: int, counter: SkipCounter) -> Iterator[Batch]:
        seed = self.cfg.train.seed

        def rng_for(*purpose):
            return random.Random(_seed(seed, self.rank, worker, "epoch", self.epoch, *purpose))

        streams = []
        for i, (name, urls, _) in enumerate(self.shard_lists):
            mine = split_shards(urls, self.rank, self.world_size, worker, self.num_workers, name)
            rng_for("shards", i).shuffle(mine)
            streams.append(_single_pass_samples(mine, counter, self.cfg.data))
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
    and then SIGKILL (their pipe/curl children die with them, see streams.py).
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


def make_train_loader(cfg: Config, tokenizer, rank: int, world_size: int, start_batch: int = 0, *,
                      resampled: bool = True, epoch: int = 0,
                      segment_batches: int = SEGMENT_BATCHES) -> TrainBatches:
    """This rank's training batches, ``cfg.train.micro_batch_size`` rows each.

    ``resampled=True`` (training): infinite, deterministic given
    ``cfg.train.seed`` and ``rank``; ``start_batch=k`` yields exactly what an
    uninterrupted run yields from its k-th batch on. ``resampled=False``: one
    seeded pass over this rank's split of every source (``epoch`` reseeds the
    order), each shard read by exactly one (rank, worker); the last batch may
    be short.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"make_train_loader: rank {rank} outside world_size {world_size}")
    train = cfg.data.train or resolve_sources(cfg.data)[0]  # demo data only when no train source is set
    shard_lists = [(src.path, expand_shards(src), src.weight) for src in train]
    if not resampled:  # fail here, in the main process, not as a hang in a worker
        for name, urls, _ in shard_lists:
            split_shards(urls, rank, world_size, 0, max(1, cfg.data.num_workers), name)
    dataset = _TrainStream(cfg, tokenizer, rank, world_size, start_batch, shard_lists, resampled,
                           segment_batches, epoch)
    return TrainBatches(dataset, cfg.data.num_workers)


# ---------------------------------------------------------------- eval


class EvalLoader:
    """Finite, in-order eval batches; ``skipped`` is the running total of skipped samples."""

    def __init__(self, cfg: Config, sources: list[Source], tokenizer, rank: int, world_size: int,
                 batch_size: int):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.urls = [url for src in sources for url in expand_shards(src)]
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.counter = SkipCounter(f"eval rank {rank}")

    @property
    def skipped(self) -> int:
        return self.counter.count

    def __iter__(self) -> Iterator[Batch]:
        samples = _single_pass_samples(self.urls, self.counter, self.cfg.data)
        mine = itertools.islice(samples, self.rank, None, self.world_size)  # raw sample i -> rank i % world
        units = _decode(mine, self.cfg, self.tokenizer, train=False, rng=None, counter=self.counter)
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


def make_eval_loader(cfg: Config, sources: list[Source], tokenizer, rank: int = 0, world_size: int = 1,
                     batch_size: Optional[int] = None) -> EvalLoader:
    """Held-out batches in shard order, no shuffle, every modality and caption of a sample kept.

    ``batch_size`` counts samples (default ``cfg.train.micro_batch_size``); a
    sample's rows (one per modality, one per caption) share its pair id and
    never straddle two batches. With several ranks, raw sample i goes to rank
    ``i % world_size``.
    """
    return EvalLoader(cfg, sources, tokenizer, rank, world_size, batch_size or cfg.train.micro_batch_size)
