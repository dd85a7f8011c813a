"""The sample stream: shard URLs -> raw tar samples (shuffled, mixed over sources) -> decoded units.

A unit is the list of rows one sample gives (a pair's rows stay together).
Whatever cannot be read or decoded is skipped and counted on a
:class:`SkipCounter`, never raised: an unreadable shard counts once, a refused
or undecodable sample once each. Only a source that gives nothing at all
raises :class:`NoDecodableSample`.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Iterator, Optional

from unimodal_free.batch import Row
from unimodal_free.config import DataConfig
from unimodal_free.data.reading.elements import DecodeError, known_member, sample_rows
from unimodal_free.data.reading.handlers import SkipCounter, describe
from unimodal_free.data.reading.streams import open_shard
from unimodal_free.data.reading.tar_reader import MemberTooLarge, TarMembers, uncompressed

# A resampled source whose last this-many shards gave no sample is broken, not unlucky.
MAX_EMPTY_SHARDS = 50
# A raw sample the reader refuses carries this key (value: the reason); decode_units counts it.
SKIP = "__skip__"


def _split_name(name: str) -> tuple[Optional[str], Optional[str]]:
    """'dir/key.ext.gz' -> ('dir/key', 'ext.gz') (WebDataset's rule: the key ends at the first dot)."""
    base = name.rsplit("/", 1)
    stem, sep, ext = base[-1].partition(".")
    if not sep or not stem:
        return None, None
    return (base[0] + "/" + stem if len(base) == 2 else stem), ext.lower()


def read_shard(url: str, counter: SkipCounter, data_cfg: DataConfig) -> Iterator[dict[str, Any]]:
    """Stream the samples of one tar shard (local path, pipe:, http...).

    A shard that cannot be opened, stalls for ``data.read_timeout_s``, or
    breaks mid-stream (truncated download, corrupt tar), counts as one skipped
    sample: the sample being assembled when it broke is dropped (it may be
    incomplete) and reading moves to the next shard. Files in a sample are
    grouped by consecutive key, as WebDataset does.

    Cost per sample is bounded from the tar headers (parsed by ``tar_reader``), before any data is read:
    members of extensions no modality uses are skipped unread; a member over
    ``data.max_member_bytes`` (of any extension) refuses its sample and ends
    the shard (stepping over it would still cost its size in reading and
    decompressing); a second file of the same extension and a key that an
    earlier sample of the shard already had refuse their sample. Refused
    samples are yielded with a ``SKIP`` reason (and no data) for ``decode_units``
    to count. A long-name or pax record over ``tar_reader.MAX_RECORD_BYTES`` is refused
    the same way (the sample being assembled is dropped).
    """
    stream = None
    current: Optional[dict[str, Any]] = None
    seen: set[str] = set()
    n = 0
    try:
        stream = open_shard(url, data_cfg.read_timeout_s)
        tar = TarMembers(uncompressed(stream), data_cfg.max_member_bytes)
        try:
            for info in tar:
                if not info.regular:
                    continue
                key, ext = _split_name(info.name)
                if key is None or key.rsplit("/", 1)[-1].startswith("__") or not known_member(ext):
                    continue  # the reader steps over the data (at most max_member_bytes) in bounded blocks
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
                    current[ext] = tar.read()
        except MemberTooLarge as exc:
            key = _split_name(exc.name)[0] if exc.name is not None else None
            if current is not None and exc.name is not None and current["__key__"] != key:
                yield current  # complete: the refused member starts another sample (a refused record: dropped)
            current = None
            yield {"__key__": key or exc.name or "(tar record)", "__url__": url, SKIP: str(exc)}
            return
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


def shuffle_samples(samples: Iterable[Any], bufsize: int, rng: random.Random, initial: int = 100) -> Iterator[Any]:
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


def resampled_samples(urls: list[str], rng: random.Random, counter: SkipCounter, name: str,
                      data_cfg: DataConfig) -> Iterator[dict]:
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


def single_pass_samples(urls: list[str], counter: SkipCounter, data_cfg: DataConfig) -> Iterator[dict]:
    for url in urls:
        yield from read_shard(url, counter, data_cfg)


def mix_sources(streams: list[Iterator[dict]], weights: list[float], rng: random.Random) -> Iterator[dict]:
    """Draw each sample from a source with probability proportional to its weight; drop exhausted ones."""
    streams, weights = list(streams), list(weights)
    while streams:
        i = rng.choices(range(len(streams)), weights=weights)[0] if len(streams) > 1 else 0
        try:
            yield next(streams[i])
        except StopIteration:
            del streams[i], weights[i]



def decode_units(samples: Iterable[dict], data_cfg: DataConfig, tokenizer, train: bool,
                 rng: Optional[random.Random], counter: SkipCounter,
                 max_in_row: Optional[int] = None,
                 augment_rng: Optional[random.Random] = None) -> Iterator[list[Row]]:
    """Raw samples -> list of rows per sample (a *unit*: a pair's rows stay together); bad ones counted.

    ``max_in_row``: that many skips without a decodable sample between them raise
    :class:`NoDecodableSample` (training: the stream is endless, so a source that
    decodes nothing would otherwise loop forever). ``augment_rng``: the training pictures' augmentation
    (``data.image_augment``; see :func:`sample_rows`).
    """
    for sample in samples:
        if SKIP in sample:
            counter.skip(f"{sample['__url__']}:{sample['__key__']}", sample[SKIP])
        else:
            try:
                rows = sample_rows(sample, data_cfg, tokenizer, train=train, rng=rng, augment_rng=augment_rng)
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
