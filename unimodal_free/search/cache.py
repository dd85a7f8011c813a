"""A gallery's embeddings kept beside it, so the second search of a gallery embeds only the query.

Where: ``GALLERY/.unimodal_free-search/`` (a tar shard's folder for a shard), or, when that cannot be
written (or is a link), ``~/.cache/unimodal_free/search/<sha256 of the gallery's absolute path>/``.
What: ``<name>.json``, the index (every source file's path, size and mtime in nanoseconds with the
rows it gave, every item, the build id), and ``<name>.<build>.safetensors`` with one float32 tensor
``embeddings`` (items, D). ``<name>`` is a hash of the model fingerprint (every weight tensor the
embedder runs, its whole config, teacher/student, the preprocessing with the tokenizer's sha256) and
of which gallery it is, so two models keep two caches. A source file whose path, size and mtime are
unchanged keeps its rows; a changed, added or removed one is re-read alone.

Safetensors and JSON only: nothing read back can run code. Everything read back is checked (format,
model, types, row ranges, the tensor's name, dtype, shape, finiteness and norms, the build id that
pairs the two files); a cache that fails a check is rebuilt after one warning line. Both files are
written to a temporary name and renamed, the tensor file first under a name of its own, so a crash or
a second search writing at the same time leaves either the old or the new pair, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from unimodal_free.bounded_read import read_json_bounded
from unimodal_free.config import config_to_dict
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.embedder import Embedder
from unimodal_free.modalities import MODALITIES
from unimodal_free.search.gallery import CACHE_DIR_NAME, Gallery, GalleryItem, SourceFile, embed_sources

FORMAT = "unimodal_free-search/1"
TENSOR = "embeddings"
INDEX_MAX_BYTES = 1 << 30  # ~ 5 million items with short captions
NORM_TOLERANCE = 1e-3  # rows are L2-normalised
FALLBACK_ROOT = "~/.cache/unimodal_free/search"
_BUILD = re.compile(r"[0-9a-f]{32}")


class CacheInvalid(ValueError):
    """A cache that fails a check when read back; the message says which."""


def model_fingerprint(embedder: Embedder) -> str:
    """sha256 of what decides an embedding: every tensor of the model as it runs (name, dtype, shape, bytes),
    the run's config, teacher or student, and the preprocessing (the tokenizer's sha256 included)."""
    h = hashlib.sha256()
    about = {"config": config_to_dict(embedder.cfg), "which": embedder.which, "preprocessing": embedder.preprocessing}
    h.update(json.dumps(about, sort_keys=True, default=str).encode())
    for name, t in sorted(embedder.model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _writable_dir(path: Path) -> bool:
    """``path`` is (or now is) a real folder this process can create files in (root ignores mode bits: try)."""
    try:
        if path.is_symlink():
            return False
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def cache_dir(gallery: Gallery) -> Optional[Path]:
    """Beside the gallery when it can be written there, else under the user's cache folder; None: neither."""
    for candidate in (gallery.root / CACHE_DIR_NAME,
                      Path(os.path.expanduser(FALLBACK_ROOT)) / hashlib.sha256(
                          os.path.realpath(gallery.root).encode()).hexdigest()[:16]):
        if _writable_dir(candidate):
            return candidate
    return None


@dataclass
class Cached:
    """What a cache holds: items and their rows, grouped by source file (each source a contiguous range)."""

    sources: list[SourceFile]
    ranges: list[tuple[int, int]]  # per source: rows [start, stop)
    items: list[GalleryItem]
    embeddings: torch.Tensor  # (len(items), D) float32, L2-normalised
    build: str = ""

    def rows_of(self) -> dict[SourceFile, tuple[list[GalleryItem], torch.Tensor]]:
        return {s: (self.items[a:b], self.embeddings[a:b]) for s, (a, b) in zip(self.sources, self.ranges)}


class GalleryCache:
    """The cache files of one (model, gallery) in ``folder``."""

    def __init__(self, folder: Path, model: str, gallery: Gallery, dim: int):
        self.folder, self.model, self.dim = folder, model, dim
        self.identity = gallery.identity
        self.name = hashlib.sha256(f"{model}\0{gallery.identity}".encode()).hexdigest()[:16]
        self.index = folder / f"{self.name}.json"

    def tensor_path(self, build: str) -> Path:
        return self.folder / f"{self.name}.{build}.safetensors"

    # ------------------------------------------------------------ read
    def load(self) -> Optional[Cached]:
        """The cache, or None when there is none; CacheInvalid (one line) when it fails a check."""
        if not os.path.lexists(self.index):
            return None
        try:
            index = read_json_bounded(self.index, INDEX_MAX_BYTES, "the search cache index", links=False)
            cached = self._parse(index)
            cached.embeddings = self._tensor(cached.build, len(cached.items))
            return cached
        except CacheInvalid:
            raise
        except Exception as exc:  # whatever hostile bytes make a parser raise: the cache is rebuilt, never trusted
            raise CacheInvalid(f"{self.index}: {type(exc).__name__}: {exc}") from None

    def _parse(self, index) -> Cached:
        def bad(what: str) -> CacheInvalid:
            return CacheInvalid(f"{self.index}: {what}")

        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} index")
        if index.get("model") != self.model or index.get("gallery") != self.identity or index.get("dim") != self.dim:
            raise bad("written for another model or gallery")
        build, sources, items = index.get("build"), index.get("sources"), index.get("items")
        if not isinstance(build, str) or not _BUILD.fullmatch(build):
            raise bad("bad build id")
        if not isinstance(sources, list) or not isinstance(items, list):
            raise bad("sources and items must be lists")
        out = Cached([], [], [], torch.empty(0), build)
        row = 0
        for s in sources:
            if not (isinstance(s, dict) and isinstance(s.get("path"), str)
                    and all(type(s.get(k)) is int for k in ("size", "mtime_ns", "rows"))) or s["rows"] < 0:
                raise bad("bad source entry")
            out.sources.append(SourceFile(s["path"], s["size"], s["mtime_ns"]))
            out.ranges.append((row, row + s["rows"]))
            row += s["rows"]
        if row != len(items):
            raise bad(f"sources give {row} rows, the index lists {len(items)} items")
        for (start, stop), source in zip(out.ranges, out.sources):
            for entry in items[start:stop]:
                if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                                        for k in ("key", "modality", "caption", "member"))
                        and entry["modality"] in MODALITIES):
                    raise bad("bad item entry")
                out.items.append(GalleryItem(entry["key"], entry["modality"], entry["caption"], source.path,
                                             entry["member"]))
        return out

    def _tensor(self, build: str, rows: int) -> torch.Tensor:
        path = self.tensor_path(build)
        if os.path.islink(path) or not path.is_file():
            raise CacheInvalid(f"{path}: missing or not a regular file")
        with safe_open(str(path), framework="pt") as f:
            if list(f.keys()) != [TENSOR] or (f.metadata() or {}).get("build") != build:
                raise CacheInvalid(f"{path}: not the tensor file of {self.index.name}")
            view = f.get_slice(TENSOR)
            if view.get_dtype() != "F32" or list(view.get_shape()) != [rows, self.dim]:
                raise CacheInvalid(f"{path}: {view.get_dtype()} {view.get_shape()}, expected F32 [{rows}, {self.dim}]")
            z = f.get_tensor(TENSOR)
        if rows and (not torch.isfinite(z).all() or (z.norm(dim=1) - 1).abs().max() > NORM_TOLERANCE):
            raise CacheInvalid(f"{path}: rows are not unit-length embeddings")
        return z

    # ------------------------------------------------------------ write
    def write(self, cached: Cached, previous_build: str = "") -> None:
        """Tensor file first (a name of its own), then the index that names it, each renamed into place."""
        build = uuid.uuid4().hex
        metadata = {"format": FORMAT, "build": build}
        _atomic_write(self.tensor_path(build),
                      save_safetensors({TENSOR: cached.embeddings.float().contiguous()}, metadata=metadata))
        index = {"format": FORMAT, "model": self.model, "gallery": self.identity, "dim": self.dim, "build": build,
                 "sources": [{"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "rows": b - a}
                             for s, (a, b) in zip(cached.sources, cached.ranges)],
                 "items": [{"key": i.key, "modality": i.modality, "caption": i.caption, "member": i.member}
                           for i in cached.items]}
        _atomic_write(self.index, json.dumps(index, ensure_ascii=False).encode("utf-8"))
        cached.build = build
        if previous_build and previous_build != build and _BUILD.fullmatch(previous_build):
            try:
                self.tensor_path(previous_build).unlink()
            except OSError:
                pass  # already gone (a second search replaced it too)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- reuse what is unchanged, embed the rest


@dataclass
class Refresh:
    cached: Cached
    embedded_sources: int  # source files read and embedded this time
    embedded_items: int
    reused_items: int


def refresh(gallery: Gallery, old: Optional[Cached],
            embed_sources: Callable[[list[SourceFile]], dict[SourceFile, tuple[list[GalleryItem], torch.Tensor]]],
            dim: int) -> Refresh:
    """The gallery's items and embeddings: a source file unchanged since ``old`` keeps its rows, the others
    go through ``embed_sources`` (one call for all of them, so batches span files)."""
    kept = old.rows_of() if old is not None else {}
    stale = [s for s in gallery.sources if s not in kept]
    fresh = embed_sources(stale) if stale else {}
    sources, ranges, items, parts = [], [], [], []
    for s in gallery.sources:
        got_items, z = kept[s] if s in kept else fresh[s]
        sources.append(s)
        ranges.append((len(items), len(items) + len(got_items)))
        items += got_items
        parts.append(z)
    z = torch.cat(parts) if parts else torch.empty(0, dim)
    new_items = sum(len(fresh[s][0]) for s in stale)
    return Refresh(Cached(sources, ranges, items, z), len(stale), new_items, len(items) - new_items)


def warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def gallery_embeddings(gallery: Gallery, embedder: Embedder, batch_size: int):
    """(Refresh, a status line): the cache's rows where still valid, the rest embedded and the cache rewritten."""
    counter = SkipCounter("gallery")
    started = time.perf_counter()
    folder = cache_dir(gallery)
    cache, old = None, None
    if folder is None:
        warn(f"no writable cache folder beside {gallery.root} or under ~/.cache/unimodal_free/search: embedding without a cache")
    else:
        cache = GalleryCache(folder, model_fingerprint(embedder), gallery, embedder.embedding_dim)
        try:
            old = cache.load()
        except CacheInvalid as exc:
            warn(f"search cache unusable, rebuilding it: {exc}")
    done = refresh(gallery, old, lambda stale: embed_sources(gallery, stale, embedder, counter, batch_size),
                   embedder.embedding_dim)
    if cache is not None and (done.embedded_sources or old is None or old.sources != done.cached.sources):
        try:
            cache.write(done.cached, old.build if old is not None else "")
        except OSError as exc:
            warn(f"search cache {folder}: not written ({exc})")
    if counter.count:
        warn(f"{counter.count} gallery items or samples could not be read and are left out ({counter.reasons_line()})")
    seconds = time.perf_counter() - started
    where = f"cache {cache.index}" if cache is not None else "no cache"
    status = (f"{done.embedded_items} items embedded from {done.embedded_sources} of {len(gallery.sources)} files, "
              f"{done.reused_items} reused, {seconds:.2f} s; {where}")
    return done, status, counter
