"""img2dataset output: its WebDataset tars are read as they are; a caption<TAB>path table is written as shards.

    python -m unimodal_free.data.corpora img2dataset cc12m/ DST [--heldout-shards 1]
    python -m unimodal_free.data.corpora img2dataset pairs.tsv DST [--heldout 0.05] [--root DIR]

WebDataset output (img2dataset's ``--output_format webdataset``: ``00000.tar`` ... holding
``000000000.jpg``, ``.txt`` and ``.json`` per sample, beside ``00000_stats.json`` and ``00000.parquet``)
is what the reader takes: no sample is rewritten. Every sample is read once with the reader's caps
and decoded (picture, caption, recording) to count what training will see, and ``DST/train`` and
``DST/heldout`` get symbolic links to the shards: the last ``--heldout-shards`` of them (by name) are
held out. ``DST/report.json`` counts the samples per modality combination and names each unreadable
one (the reader skips it too); ``DST/config-snippet.json`` holds the ``data`` section that points a run
at both.

A table of ``caption<TAB>local path`` lines (``.tsv``, an optional header line ``caption<TAB>path``;
paths relative to the table's folder or ``--root``, confined to it) is rewritten into image+text shards
with a seeded ``--heldout`` share held out. A ``.parquet`` table needs pyarrow (not a dependency of
this package): without it, export the table as TSV (``caption`` and ``path`` columns).
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Iterator, Union

from unimodal_free.bounded_read import BoundedReadError, read_text_bounded
from unimodal_free.config import DataConfig
from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import (ITEMS, REPORT, ConversionReport, check_empty, inside,
                                                   seeded_heldout, write_conversion)
from unimodal_free.data.elements import DecodeError, read_meta, sample_modalities
from unimodal_free.data.handlers import SkipCounter
from unimodal_free.data.media import BadMedia, check_audio, decode_image_rgb, decode_text
from unimodal_free.data.raw_samples import RawSample, Skip
from unimodal_free.data.samples import SKIP, read_shard
from unimodal_free.data.sources import SHARD_EXTS
from unimodal_free.modalities import MODALITY

MAX_TABLE_BYTES = 1 << 30
SNIPPET = "config-snippet.json"
HEADER_PATHS = ("path", "filepath", "file", "local_path")


def add_arguments(parser) -> None:
    parser.add_argument("--heldout-shards", type=int, default=1,
                        help="WebDataset output: the last N shards (by name) are held out (default 1)")
    parser.add_argument("--heldout", type=float, default=0.05,
                        help="caption/path table: share of rows held out (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="caption/path table: which rows are held out")
    parser.add_argument("--root", type=Path, default=None,
                        help="caption/path table: folder its paths are relative to (default: the table's folder)")


def _problem(sample: dict, where: str) -> tuple[list[str], str | None]:
    """(modalities the sample holds, why training could not use it or None): the reader's caps and decoders."""
    if SKIP in sample:
        return [], sample[SKIP]
    try:
        meta = read_meta(sample, where)
    except DecodeError as e:
        return [], e.reason
    present = sample_modalities(sample)
    if not present and "captions" not in meta:
        return [], "no image/speech/text file in sample"
    decode = {"image": decode_image_rgb, "speech": check_audio, "text": decode_text}
    for m in present:
        data = next(v for k, v in sample.items() if k in MODALITY[m].extensions)
        try:
            decode[m](data)
        except BadMedia as e:
            return present, f"{m}: {e}"
    return present, None


def _link(shards: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        os.symlink(shard.resolve(), folder / shard.name)


def read_as_is(src: Path, dst: Path, heldout_shards: int) -> ConversionReport:
    shards = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(SHARD_EXTS))
    if heldout_shards < 0 or heldout_shards >= len(shards):
        raise CorpusError(f"--heldout-shards {heldout_shards}: {src} has {len(shards)} shards, so between 0 and "
                          f"{len(shards) - 1} can be held out (python -m unimodal_free.data.split splits by pair id)")
    check_empty(dst)
    sides = {"train": shards[:len(shards) - heldout_shards], "heldout": shards[len(shards) - heldout_shards:]}
    report = ConversionReport("img2dataset")
    data_cfg = DataConfig()
    for split, files in sides.items():
        if not files:
            continue
        kinds: collections.Counter = collections.Counter()
        read = collections.Counter({item: 0 for item in ITEMS})
        counter = SkipCounter("img2dataset")
        for shard in files:
            broken = counter.count  # read_shard counts a shard that breaks off there; refused samples come back
            for sample in read_shard(str(shard), counter, data_cfg):
                where = f"{shard}:{sample['__key__']}"
                present, why = _problem(sample, where)
                read.update(present)
                if why:
                    report.dropped.append(f"{where}: {why}")
                else:
                    kinds["+".join(present)] += 1
            if counter.count > broken:
                report.dropped.append(f"{shard}: the shard breaks off (corrupt or truncated tar); the rest is unread")
        _link(files, dst / split)
        report.splits[split] = {"samples": sum(kinds.values()), "shards": len(files), "combinations": dict(kinds),
                                "read": dict(read)}
    (dst / REPORT).write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    snippet = {"data": {side: [{"path": str((dst / side).resolve()), "weight": 1.0}] for side in report.splits}}
    (dst / SNIPPET).write_text(json.dumps(snippet, indent=1) + "\n")
    return report


def table_rows(table: Path, root: Path, share: float, seed: int) -> Iterator[Union[RawSample, Skip]]:
    try:
        lines = read_text_bounded(table, MAX_TABLE_BYTES, "table size limit").splitlines()
    except BoundedReadError as e:
        raise CorpusError(str(e)) from None
    start = 1 if lines and [c.strip().lower() for c in lines[0].split("\t")][:2] in (
        ["caption", p] for p in HEADER_PATHS) else 0
    rows: list[tuple[int, str, str]] = []
    for lineno, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 2 or not cells[1].strip():
            yield Skip(f"{table}:{lineno}", "expected caption<TAB>path")
            continue
        rows.append((lineno, cells[0], cells[1].strip()))
    held = seeded_heldout([f"{n}" for n, _, _ in rows], share, seed)
    for lineno, caption, rel in rows:
        where = f"{table}:{lineno}"
        yield RawSample(key=str(Path(rel).with_suffix("")), image=inside(root, rel, where), text=caption or None,
                        split="heldout" if f"{lineno}" in held else "train", meta={"source": rel}, where=where)


def convert(src: Path, dst: Path, args) -> ConversionReport:
    if src.is_dir():
        return read_as_is(src, dst, args.heldout_shards)
    if src.suffix == ".parquet":
        raise CorpusError(f"{src}: reading parquet needs pyarrow, which is not installed; export the table as "
                          "TSV (caption<TAB>path lines) or pip install pyarrow")
    if not src.is_file():
        raise CorpusError(f"{src}: neither img2dataset's WebDataset folder nor a caption<TAB>path table")
    root = args.root or src.parent
    return write_conversion("img2dataset", table_rows(src, root, args.heldout, args.seed), dst, args.maxcount)
