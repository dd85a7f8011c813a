"""What the speech/text and image/text converters share: paths confined to the corpus, the seeded held-out
share, and the writer of ``DST/{train,heldout}/shard-*.tar`` + ``DST/report.json``.

Every sample carries its split (``RawSample.split``); the report counts, per split, the samples per
modality combination and the pictures / recordings / captions read and written, and lists every
dropped entry with its reason (a converter's own :class:`Skip` or one the shard writer refused), so
each item of the corpus is accounted for.
"""

from __future__ import annotations

import collections
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from unimodal_free.data.corpora.common import CorpusError, check_shares
from unimodal_free.data.raw_samples import RawSample, Skip
from unimodal_free.data.shard_writer import SIZES_FILE, write_shards
from unimodal_free.data.split import heldout_groups

ITEMS = ("image", "speech", "text")
REPORT = "report.json"


def inside(root: Path, value: str, where: str) -> Path:
    """``root / value`` for a path read from a corpus file; CorpusError (one line naming the file, the entry
    and the root) for an absolute path, '..', or a symbolic link leading out of ``root``."""
    rel = Path(value)
    if not value or rel.is_absolute() or ".." in rel.parts:
        raise CorpusError(f"{where}: entry {value!r} refused: paths must be relative and stay inside {root}")
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise CorpusError(f"{where}: entry {value!r} refused: a symbolic link leads out of {root}")
    return path


def seeded_heldout(keys: Iterable[str], share: float, seed: int) -> set[str]:
    """The keys of a corpus without a published split that go to held-out (``data.split``'s choice)."""
    check_shares(heldout=share)
    return heldout_groups({k: "all" for k in keys}, share, seed)


@dataclass
class ConversionReport:
    corpus: str
    splits: dict[str, dict] = field(default_factory=dict)  # split -> samples, shards, combinations, read
    dropped: list[str] = field(default_factory=list)  # "where: reason", one per dropped entry

    def written(self) -> int:
        return sum(s["samples"] for s in self.splits.values())

    def as_dict(self) -> dict:
        return {"corpus": self.corpus, "splits": self.splits, "dropped": self.dropped}

    def table(self) -> str:
        lines = [f"{self.corpus}: {self.written()} samples, {len(self.dropped)} entries dropped"]
        for split, s in self.splits.items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["combinations"].items())) or "none"
            read = ", ".join(f"{k} {n}" for k, n in s["read"].items() if n)
            lines.append(f"  {split:8s} {s['samples']} samples ({kinds}) in {s['shards']} shards; read {read}")
        lines += [f"  dropped: {line}" for line in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... {len(self.dropped) - 20} more in {REPORT}")
        return "\n".join(lines)


def _items(raw: RawSample) -> dict[str, int]:
    return {"image": int(raw.image is not None), "speech": int(raw.speech is not None),
            "text": len(raw.captions) if raw.captions is not None else int(raw.text is not None)}


def check_empty(dst: Path) -> None:
    for split in ("train", "heldout"):
        out = dst / split
        if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists()):
            raise CorpusError(f"{out} already holds shards; write into an empty folder")


def write_conversion(corpus: str, samples: Iterable[Union[RawSample, Skip]], dst: Path,
                     maxcount: int = 10000) -> ConversionReport:
    """Write each split's samples to ``dst/<split>/`` and ``dst/report.json``; returns the report."""
    if maxcount < 1:
        raise CorpusError(f"--maxcount: must be at least 1, got {maxcount}")
    check_empty(dst)
    report = ConversionReport(corpus)
    by_split: dict[str, list[RawSample]] = collections.defaultdict(list)
    for raw in samples:  # a converter raises CorpusError for a hostile entry before anything is written
        if isinstance(raw, Skip):
            report.dropped.append(f"{raw.where}: {raw.reason}")
        else:
            by_split[raw.split or "train"].append(raw)
    for split in sorted(by_split, key=lambda s: (s != "train", s)):
        read = collections.Counter({item: 0 for item in ITEMS})
        for raw in by_split[split]:
            read.update(_items(raw))
        log = io.StringIO()
        written = write_shards(by_split[split], dst / split, maxcount, split=split, log=log, progress=False)
        report.dropped += [line.removeprefix("skip ") for line in log.getvalue().splitlines()]
        report.splits[split] = {"samples": written.written, "shards": len(written.shards),
                                "combinations": dict(written.kinds), "read": dict(read)}
    dst.mkdir(parents=True, exist_ok=True)
    (dst / REPORT).write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    return report
