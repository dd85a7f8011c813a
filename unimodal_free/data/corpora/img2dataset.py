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

from pathlib import Path
from typing import Iterator, Union

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import ConversionReport, inside, read_lines, seeded_heldout, write_conversion
from unimodal_free.data.writing.raw_samples import RawSample, Skip

HEADER_PATHS = ("path", "filepath", "file", "local_path")


def add_arguments(parser) -> None:
    parser.add_argument("--heldout-shards", type=int, default=1,
                        help="WebDataset output: the last N shards (by name) are held out (default 1)")
    parser.add_argument("--heldout", type=float, default=0.05,
                        help="caption/path table: share of rows held out (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="caption/path table: which rows are held out")
    parser.add_argument("--root", type=Path, default=None,
                        help="caption/path table: folder its paths are relative to (default: the table's folder)")


def table_rows(table: Path, root: Path, share: float, seed: int, max_bytes: int) -> Iterator[Union[RawSample, Skip]]:
    lines = read_lines(table, max_bytes)
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
        yield RawSample(key=str(Path(rel).with_suffix("")), image=inside(root, rel, where, "--root"),
                        text=caption or None, split="heldout" if f"{lineno}" in held else "train", meta={"source": rel}, where=where)


def convert(src: Path, dst: Path, args) -> ConversionReport:
    if src.is_dir():
        from unimodal_free.data.corpora.img2dataset_shards import read_as_is  # lazily: the shard reader pulls in torch

        return read_as_is(src, dst, args.heldout_shards)
    if src.suffix == ".parquet":
        raise CorpusError(f"{src}: reading parquet needs pyarrow, which is not installed; export the table as "
                          "TSV (caption<TAB>path lines) or pip install pyarrow")
    if not src.is_file():
        raise CorpusError(f"{src}: neither img2dataset's WebDataset folder nor a caption<TAB>path table")
    root = args.root or src.parent
    rows = table_rows(src, root, args.heldout, args.seed, args.max_file_bytes)
    return write_conversion("img2dataset", rows, dst, args.maxcount)
