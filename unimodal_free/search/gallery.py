"""A search gallery: the files it is made of, and its items (one per picture, recording and caption).

A gallery is a folder of tar shards or one shard (read by the training reader,
``data/samples.read_shard``, and decoded by ``data/elements.sample_rows``, the eval's decoder), else a
folder of pictures, recordings and ``.txt`` captions (decoded by the embedder's file routes), so an item
embeds here as it does in the retrieval eval and in ``unimodal_free.load(...).embed``.
A folder is walked without following links to folders; a linked file is kept only when it resolves
inside the gallery, and hidden files and folders (the cache among them) are not listed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from unimodal_free.batch import Elements
from unimodal_free.bounded_read import BoundedReadError, read_bounded
from unimodal_free.data.reading.elements import DecodeError, member_exts, read_meta, sample_captions, sample_rows
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import SKIP, read_shard
from unimodal_free.data.reading.streams import LocalShard
from unimodal_free.data.reading.tar_reader import SHARD_EXTS
from unimodal_free.embedder import Embedder, file_modality, read_caption_file
from unimodal_free.modalities import CAPTION_MODALITY, MODALITIES, SUFFIX_MODALITY
from unimodal_free.store.rebuild import EvalError
from unimodal_free.usage import UsageError

CACHE_DIR_NAME = ".unimodal_free-search"  # inside a gallery folder; hidden, so never listed as gallery files


@dataclass(frozen=True)
class SourceFile:
    """One file of the gallery (a shard, or one picture/recording/caption file) as the cache keys it."""

    path: str  # relative to the gallery root, "/"-separated
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class GalleryItem:
    """One ranked thing: a picture, a recording or one caption line."""

    key: str  # the shard sample's key, or the file's relative path without its suffix
    modality: str
    caption: str  # a text item's caption; "" for pictures and recordings (see :func:`sample_caption`)
    source: str  # SourceFile.path it was read from
    member: str = ""  # the tar member (``key.png``) of a shard item; "" for a file

    @property
    def file(self) -> str:
        """``shard.tar:member`` or the file's relative path."""
        return f"{self.source}:{self.member}" if self.member else self.source


@dataclass(frozen=True)
class Gallery:
    root: Path  # the folder the sources' relative paths start from
    kind: str  # "shards" or "files"
    sources: list[SourceFile]
    identity: str  # what the cache name separates: "folder", or "shard:<name>" for one shard file
    outside_links: int = 0  # links not listed because they resolve outside the gallery (or to no file)

    def path(self, source: SourceFile) -> Path:
        return self.root / source.path


def _regular_inside(path: str, root_real: str) -> bool:
    """A regular file, or a link to a regular file inside the gallery (a link out is never read)."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return True
    if not stat.S_ISLNK(st.st_mode):
        return False
    real = os.path.realpath(path)
    return real.startswith(root_real + os.sep) and os.path.isfile(real)


def _source(root: Path, rel: str) -> SourceFile:
    st = os.stat(root / rel)
    return SourceFile(rel, st.st_size, st.st_mtime_ns)


def _walk_files(root: Path, root_real: str) -> tuple[list[str], int]:
    """Relative paths of the picture/recording/caption files below ``root`` (sorted), and links refused."""
    found, refused = [], 0
    for folder, dirs, files in os.walk(root, followlinks=False):  # links to folders are listed, never entered
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            suffix = Path(name).suffix.lower().lstrip(".")
            if name.startswith(".") or suffix not in SUFFIX_MODALITY:
                continue
            path = os.path.join(folder, name)
            if _regular_inside(path, root_real):
                found.append(Path(path).relative_to(root).as_posix())
            elif os.path.islink(path):
                refused += 1
    return found, refused


def list_gallery(arg: str) -> Gallery:
    """``--gallery``: a tar shard, a folder of shards (top level, as the reader reads one), else a folder of files."""
    p = Path(arg).expanduser()
    if p.is_file():
        if not p.name.endswith(SHARD_EXTS):
            raise UsageError(f"--gallery {arg}: a file must be a tar shard ({'/'.join(SHARD_EXTS)})")
        root = p.parent
        return Gallery(root, "shards", [_source(root, p.name)], f"shard:{p.name}")
    if not p.is_dir():
        raise UsageError(f"--gallery {arg}: no such folder or shard file")
    root_real = os.path.realpath(p)
    shards, refused = [], 0
    for entry in sorted(os.scandir(p), key=lambda e: e.name):
        if entry.name.endswith(SHARD_EXTS) and not entry.name.startswith("."):
            if _regular_inside(entry.path, root_real):
                shards.append(entry.name)
            elif entry.is_symlink():
                refused += 1
    if shards:
        return Gallery(p, "shards", [_source(p, s) for s in shards], "folder", refused)
    files, refused = _walk_files(p, root_real)
    if not files:
        raise UsageError(f"--gallery {arg}: empty (no tar shards, no {'/'.join(sorted(SUFFIX_MODALITY))} files)")
    return Gallery(p, "files", [_source(p, f) for f in files], "folder", refused)


# ---------------------------------------------------------------- items


def _shard_items(gallery: Gallery, source: SourceFile, embedder: Embedder,
                 counter: SkipCounter) -> Iterator[tuple[GalleryItem, Elements]]:
    """Every row of every sample of one shard, as the eval decodes it, with the member it came from."""
    d = embedder.cfg.data
    for sample in read_shard(LocalShard(str(gallery.path(source))), counter, d):
        key = sample["__key__"]
        where = f"{source.path}:{key}"
        if SKIP in sample:
            counter.skip(where, sample[SKIP])
            continue
        captions: list[str] = []
        try:
            rows = sample_rows({**sample, "__url__": source.path}, d, embedder.tokenizer, train=False)
            named = {m: [f"{key}.{ext}" for ext in member_exts(sample, m)] for m in MODALITIES}
            if any(r.elements.modality == CAPTION_MODALITY for r in rows):
                captions = sample_captions(sample, read_meta(sample, where), where, d.max_caption_lines)
                member = named[CAPTION_MODALITY][0] if named[CAPTION_MODALITY] else f"{key}.json"
                named[CAPTION_MODALITY] = [member] * len(captions)
        except DecodeError as exc:
            counter.skip(exc.key, exc.reason)
            continue
        seen = {m: 0 for m in MODALITIES}
        for row in rows:  # a modality's rows come in member (text: caption) order
            m = row.elements.modality
            i, seen[m] = seen[m], seen[m] + 1
            yield GalleryItem(key, m, captions[i] if m == CAPTION_MODALITY else "", source.path, named[m][i]), row.elements


def _file_items(gallery: Gallery, source: SourceFile, embedder: Embedder,
                counter: SkipCounter) -> Iterator[tuple[GalleryItem, Elements]]:
    """One picture or recording, or one item per caption line of a .txt, through the embedder's file route."""
    path = gallery.path(source)
    key = source.path.rsplit(".", 1)[0]
    try:
        modality = file_modality(path)
        if modality == CAPTION_MODALITY:
            captions = read_caption_file(path, source.path)
            rows = [(GalleryItem(key, modality, c, source.path), embedder.preprocess(c)[0]) for c in captions]
        else:
            rows = [(GalleryItem(key, modality, "", source.path), embedder.preprocess(path)[0])]
    except EvalError as exc:
        counter.skip(source.path, str(exc).removeprefix(f"{path}: "))
        return
    yield from rows


def read_items(gallery: Gallery, source: SourceFile, embedder: Embedder,
               counter: SkipCounter) -> Iterator[tuple[GalleryItem, Elements]]:
    """The items of one source file with the rows the model embeds; what cannot be read is counted, not raised."""
    items = _shard_items if gallery.kind == "shards" else _file_items
    return items(gallery, source, embedder, counter)


def sample_caption(items: list[GalleryItem]) -> list[str]:
    """Per item, what to show beside it: its caption, or for a picture/recording the first caption of its
    sample (a shard) or of its key (``cat.png`` beside ``cat.txt``); "" when there is none."""
    first: dict[tuple[str, str], str] = {}
    for item in items:
        if item.modality == CAPTION_MODALITY:
            first.setdefault((item.source if item.member else "", item.key), item.caption)
    return [item.caption or first.get((item.source if item.member else "", item.key), "") for item in items]


# ---------------------------------------------------------------- the bytes of a few items (the contact sheet)


def item_bytes(gallery: Gallery, items: list[GalleryItem], data_cfg) -> dict[GalleryItem, bytes | str]:
    """The file or tar member of each picture/recording item, or why it could not be read (a str).

    Each shard is read once, through the reader (its caps hold); a file through ``read_bounded`` within
    ``data.max_member_bytes``, and only while it is still a file (or a link) inside the gallery.
    """
    out: dict[GalleryItem, bytes | str] = {}
    wanted: dict[str, dict[str, GalleryItem]] = {}
    root_real = os.path.realpath(gallery.root)
    for item in items:
        path = gallery.root / item.source
        if item.member:
            wanted.setdefault(item.source, {})[item.member] = item
        elif not os.path.lexists(path) or not _regular_inside(str(path), root_real):
            out[item] = "no longer a file inside the gallery"
        else:
            try:
                out[item] = read_bounded(path, data_cfg.max_member_bytes, "data.max_member_bytes")
            except BoundedReadError as exc:
                out[item] = exc.reason
    for source, members in wanted.items():
        counter = SkipCounter(f"gallery {source}")
        for sample in read_shard(LocalShard(str(gallery.root / source)), counter, data_cfg):
            for ext, data in sample.items():
                item = members.get(f"{sample['__key__']}.{ext}")
                if item is not None and isinstance(data, bytes):
                    out[item] = data
        for item in members.values():
            out.setdefault(item, "no longer in the shard")
    return out


# ---------------------------------------------------------------- embedding


def embed_sources(gallery: Gallery, sources: list[SourceFile], embedder: Embedder, counter: SkipCounter,
                  batch_size: int) -> dict[SourceFile, tuple[list[GalleryItem], torch.Tensor]]:
    """Read and embed the items of ``sources``, ``batch_size`` rows at a time across files (a folder of single
    pictures batches like a shard); an item of a modality the model was trained without is counted and left out."""
    known = set(embedder.modalities)
    out: dict[SourceFile, tuple[list[GalleryItem], list[torch.Tensor]]] = {s: ([], []) for s in sources}
    pending: list[tuple[SourceFile, GalleryItem, Elements]] = []

    def flush() -> None:
        z = embedder.embed_elements([e for _, _, e in pending], batch_size)  # (len(pending), D)
        for (source, item, _), row in zip(pending, z):
            out[source][0].append(item)
            out[source][1].append(row)
        pending.clear()

    for source in sources:
        for item, elements in read_items(gallery, source, embedder, counter):
            if item.modality not in known:
                counter.skip(item.file, f"{item.modality}: this model was trained without {item.modality}")
                continue
            pending.append((source, item, elements))
            if len(pending) >= batch_size:
                flush()
    flush()
    dim = embedder.embedding_dim
    return {s: (items, torch.stack(rows) if rows else torch.empty(0, dim)) for s, (items, rows) in out.items()}
