"""What every public-corpus converter shares: paths confined to the corpus, bounded corpus files, the
seeded held-out share, and the one writer of ``DST/<split>/shard-*.tar`` + ``DST/report.json``.

Every sample carries its split (``RawSample.split``); the report counts, per split, the samples per
modality combination and the pictures / recordings / captions read and written, and lists every
dropped entry with its reason (a converter's :class:`Skip` or :class:`Dropped`, or one the shard
writer refused), so each item of the corpus is accounted for.
"""

from __future__ import annotations

import collections
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

from unimodal_free.bounded_read import BoundedReadError, read_json_bounded, read_text_bounded
from unimodal_free.data.corpora.common import CorpusError, check_shares
from unimodal_free.data.writing.layouts import confined
from unimodal_free.data.writing.raw_samples import RawSample, Skip

ITEMS = ("image", "speech", "text")  # what the report counts: pictures, recordings, captions
REPORT = "report.json"
# A corpus file (SpokenCOCO_train.json ~150 MB, Karpathy's dataset_coco.json ~140 MB, a LibriLight
# manifest ~200 MB) is read whole.
MAX_CORPUS_FILE_BYTES = 1 << 30


def add_common_arguments(parser) -> None:
    """The options every converter takes."""
    parser.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default 10000)")
    parser.add_argument("--max-file-bytes", type=int, default=MAX_CORPUS_FILE_BYTES,
                        help=f"largest corpus file (JSON, token list, manifest, table) read "
                             f"(default {MAX_CORPUS_FILE_BYTES >> 20} MiB)")


def read_json(path: Path, max_bytes: int, option: str = "") -> Any:
    """A corpus JSON file, refused (one line naming it, and the ``option`` that gave it) when missing,
    larger than ``max_bytes`` (--max-file-bytes) or not JSON."""
    try:
        return read_json_bounded(path, max_bytes, "--max-file-bytes")
    except BoundedReadError as e:
        raise CorpusError(f"{option} {e}".strip()) from None


def read_lines(path: Path, max_bytes: int) -> list[str]:
    """A corpus text file's lines (token file, split list, manifest, table), bounded like :func:`read_json`."""
    try:
        return read_text_bounded(path, max_bytes, "--max-file-bytes").splitlines()
    except BoundedReadError as e:
        raise CorpusError(str(e)) from None


def inside(root: Path, value: Any, where: str, root_name: str) -> Path:
    """``root / value`` (resolved) for a path read from a corpus file; CorpusError (one line naming the
    file, the entry and ``root_name``, what the root is called) for a non-string, an absolute path,
    '..' or a symbolic link leading out of ``root``."""
    if not isinstance(value, str) or not value:
        raise CorpusError(f"{where}: a path must be a non-empty string, got {value!r}")
    try:
        return confined(root, value, where, "path", root_name)
    except Skip as s:
        raise CorpusError(str(s)) from None


def seeded_heldout(keys: Iterable[str], share: float, seed: int) -> set[str]:
    """The keys of a corpus without a published split that go to held-out: the round(share * n) keys of
    lowest seeded hash (``data.split``'s choice, so a smaller share holds a subset of a larger one's)."""
    from unimodal_free.data.rewriting.split import heldout_groups  # lazily: data.split imports the shard reader

    check_shares(heldout=share)
    return heldout_groups({k: "all" for k in keys}, share, seed)


@dataclass
class Dropped:
    """Items a converter read but could not take (a file that is missing), counted as read in ``split``;
    the rest of their sample is still written."""

    where: str
    reason: str
    split: str
    items: dict[str, int]


@dataclass
class ConversionReport:
    corpus: str
    splits: dict[str, dict] = field(default_factory=dict)  # split -> samples, shards, combinations, read, written
    dropped: list[str] = field(default_factory=list)  # "where: reason", one per dropped entry

    def written(self) -> int:
        return sum(s["samples"] for s in self.splits.values())

    def as_dict(self) -> dict:
        return {"corpus": self.corpus, "splits": self.splits, "dropped": self.dropped}

    def save(self, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        (dst / REPORT).write_text(json.dumps(self.as_dict(), indent=1) + "\n")

    def table(self) -> str:
        lines = [f"{self.corpus}: {self.written()} samples, {len(self.dropped)} entries dropped"]
        for split, s in self.splits.items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["combinations"].items())) or "none"
            lines.append(f"  {split:8s} {s['samples']} samples ({kinds}) in {s['shards']} shards")
            for item in ITEMS:
                read, wrote = s["read"].get(item, 0), s["written"].get(item, 0)
                if read:
                    lines.append(f"           {item:6s} read {read}, written {wrote}, dropped {read - wrote}")
        lines += [f"  dropped: {line}" for line in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... {len(self.dropped) - 20} more in {REPORT}")
        return "\n".join(lines)


def split_order(splits: Iterable[str]) -> list[str]:
    """train first, then the others by name: the order of the report."""
    return sorted(splits, key=lambda s: (s != "train", s))


def items_of(raw: RawSample) -> dict[str, int]:
    """Pictures, recordings and captions a raw sample names."""
    return {"image": int(raw.image is not None),
            "speech": len(raw.recordings) if raw.recordings else int(raw.speech is not None),
            "text": len(raw.captions) if raw.captions else int(raw.text is not None)}


def check_empty(dst: Path, splits: Iterable[str] = ("train", "heldout")) -> None:
    from unimodal_free.data.writing.shard_writer import SIZES_FILE  # lazily: it pulls in torch

    for split in splits:
        out = dst / split
        if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists()):
            raise CorpusError(f"{out} already holds shards; write into an empty folder")


def write_conversion(corpus: str, samples: Iterable[Union[RawSample, Skip, Dropped]], dst: Path,
                     maxcount: int = 10000) -> ConversionReport:
    """Write each split's samples to ``dst/<split>/`` and ``dst/report.json``; returns the report. Every
    sample is gathered first, so a converter's CorpusError for a hostile entry comes before anything is written."""
    from unimodal_free.data.writing.shard_writer import write_shards  # lazily: it pulls in torch

    if maxcount < 1:
        raise CorpusError(f"--maxcount: must be at least 1, got {maxcount}")
    report = ConversionReport(corpus)
    by_split: dict[str, list[RawSample]] = collections.defaultdict(list)
    read: dict[str, collections.Counter] = collections.defaultdict(lambda: collections.Counter(dict.fromkeys(ITEMS, 0)))
    for raw in samples:
        if isinstance(raw, Skip):
            report.dropped.append(f"{raw.where}: {raw.reason}")
        elif isinstance(raw, Dropped):
            report.dropped.append(f"{raw.where}: {raw.reason}")
            read[raw.split].update(raw.items)
            by_split[raw.split]  # a split whose every item is dropped is still reported
        else:
            split = raw.split = raw.split or "train"
            read[split].update(items_of(raw))
            by_split[split].append(raw)
    check_empty(dst, {"train", "heldout", *by_split})
    for split in split_order(by_split):
        written = write_shards(by_split[split], dst / split, maxcount, split=split, log=io.StringIO(), progress=False)
        report.dropped += written.skips
        report.splits[split] = {"samples": written.written, "shards": len(written.shards),
                                "combinations": dict(written.kinds), "read": dict(read[split]),
                                "written": dict(written.items)}
    report.save(dst)
    return report
