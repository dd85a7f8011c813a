"""Shard writer: validated samples -> ``OUT/shard-%06d.tar`` under size limits, and ``sizes.json``.

Shard size limits: ``maxcount`` samples and ``maxsize`` bytes of tar file per shard
(a new shard starts before a sample that would cross either; a single sample larger
than ``maxsize`` gets a shard of its own). No empty shard is ever written.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from tqdm import tqdm
from webdataset import TarWriter

from unimodal_free.data.writing.raw_samples import (
    MAX_INPUT_BYTES, KeyMaker, RawSample, Skip, build_sample, member_counts, modalities_of,
)
from unimodal_free.usage import parse_size  # noqa: F401  (the shard CLIs take it from here)

SHARD_PATTERN = "shard-%06d.tar"
SIZES_FILE = "sizes.json"
# Fixed member mtime: the same inputs give byte-identical shards.
TAR_MTIME = 0

BLOCK = 512
RECORD = 512 * 20  # tarfile pads the archive to a multiple of this


def _tar_bytes(sample: dict) -> int:
    """Bytes a sample occupies in a ustar archive: a header block per member + padded data."""
    return sum(BLOCK + -(-len(v) // BLOCK) * BLOCK for k, v in sample.items() if k != "__key__")


class ShardSink:
    """Writes samples into ``OUT/shard-%06d.tar`` under maxcount/maxsize; sizes.json on close.

    Each shard is written as ``.tar.tmp`` and renamed when complete, so a crash never
    leaves a truncated shard under a shard name. Shards are opened lazily: no empty shard.
    """

    def __init__(self, out_dir: Union[str, Path], maxcount: int = 10000, maxsize: int = 10**9,
                 pattern: str = SHARD_PATTERN):
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        if maxsize < RECORD:
            raise ValueError(f"maxsize must be >= {RECORD} bytes (one tar record), got {maxsize}")
        self.out_dir = Path(out_dir)
        self.maxcount, self.maxsize, self.pattern = maxcount, maxsize, pattern
        self.sizes: dict[str, int] = {}
        self._writer: TarWriter | None = None
        self._file = None
        self._name = ""
        self._count = 0
        self._offset = 0  # tar bytes written to the current shard so far

    def _would_overflow(self, nbytes: int) -> bool:
        end = self._offset + nbytes + 2 * BLOCK  # + end-of-archive blocks
        return -(-end // RECORD) * RECORD > self.maxsize

    def write(self, sample: dict) -> None:
        nbytes = _tar_bytes(sample)
        if self._writer is not None and (self._count >= self.maxcount or self._would_overflow(nbytes)):
            self._finish()
        if self._writer is None:
            self._open()
        self._writer.write(sample)
        self._count += 1
        self._offset += nbytes

    def _open(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._name = self.pattern % len(self.sizes)
        self._file = open(self.out_dir / (self._name + ".tmp"), "wb")
        self._writer = TarWriter(self._file, encoder=False, mtime=TAR_MTIME)
        self._count = self._offset = 0

    def _finish(self) -> None:
        self._writer.close()
        self._file.close()
        os.replace(self.out_dir / (self._name + ".tmp"), self.out_dir / self._name)
        self.sizes[self._name] = self._count
        self._writer = self._file = None

    def close(self) -> dict[str, int]:
        """Finish the last shard and write sizes.json ({shard file name: samples}); returns it."""
        if self._writer is not None:
            self._finish()
        if self.sizes:
            tmp = self.out_dir / (SIZES_FILE + ".tmp")
            tmp.write_text(json.dumps(self.sizes, indent=1) + "\n")
            os.replace(tmp, self.out_dir / SIZES_FILE)
        return self.sizes

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class WriteReport:
    written: int = 0
    skipped: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    items: collections.Counter = field(default_factory=collections.Counter)  # modality -> pictures/recordings/captions
    skips: list[str] = field(default_factory=list)  # "WHERE: REASON" of each skipped input

    def summary(self, out_dir: Union[str, Path]) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        return (f"wrote {self.written} samples ({kinds or 'none'}) in {len(self.shards)} shards "
                f"to {out_dir}; skipped {self.skipped} unusable inputs")


def write_shards(samples: Iterable[Union[RawSample, Skip]], out_dir: Union[str, Path], maxcount: int = 10000,
                 maxsize: int = 10**9, split: str = "train", log=None, progress: bool | None = None,
                 max_input_bytes: int = MAX_INPUT_BYTES) -> WriteReport:
    """Validate and write raw samples; skips are reported one line each on ``log`` (stderr)."""
    log = log or sys.stderr
    report = WriteReport()
    make_key = KeyMaker()
    bar = tqdm(samples, unit="sample", file=sys.stderr, disable=not progress if progress is not None else None,
               mininterval=1.0, desc="shards")
    with ShardSink(out_dir, maxcount, maxsize) as sink:
        for raw in bar:
            try:
                if isinstance(raw, Skip):
                    raise raw
                sample = build_sample(raw, make_key(raw.key), split, max_input_bytes)
            except Skip as s:
                report.skipped += 1
                report.skips.append(f"{s.where}: {s.reason}")
                bar.write(f"skip {s.where}: {s.reason}", file=log)
                continue
            for part in raw.dropped:  # parts of a written sample left out (a recording that does not decode)
                report.skips.append(f"{part.where}: {part.reason}")
                bar.write(f"skip {part.where}: {part.reason}", file=log)
            sink.write(sample)
            report.written += 1
            report.kinds[modalities_of(sample)] += 1
            report.items.update(member_counts(sample))
    report.shards = dict(sink.sizes)
    return report
