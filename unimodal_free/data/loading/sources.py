"""Where a run's data is: configured sources -> shard URLs, with the "demo" defaults resolved once.

An empty ``data.train`` / ``data.heldout`` and ``data.tokenizer = "demo"`` all
point at the demo folder (``data.demo_dir``, generated on first use).
:func:`resolve_sources` resolves that folder at most once and hands it on in
:class:`DataSources`, so the tokenizer and the loaders read the same folder
without generating or checking it again.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import braceexpand

from unimodal_free.config import DataConfig, Source
from unimodal_free.data.demo.build import ensure_demo_data
from unimodal_free.data.reading.streams import LocalShard
from unimodal_free.data.reading.tar_reader import SHARD_EXTS
DEMO_TOKENIZER = "tokenizer.model"  # inside the demo folder
_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _is_url(path: str) -> bool:
    return bool(_URL_SCHEME.match(path)) and not path.startswith("file:")


def expand_shards(source: Source | str) -> list[str]:
    """A source (dir, glob, brace pattern, URL) -> its shard URLs; local ones must exist.

    Only the source string itself may be a URL (``pipe:``, ``http(s)://``): every local
    name, and every name a glob or folder listing produced, comes back as a
    :class:`LocalShard` (absolute path, opened as a file), so a file named
    ``pipe:CMD.tar`` is never run.
    """
    path = source.path if isinstance(source, Source) else source
    if not path:
        raise ValueError("data source: empty path")
    if _is_url(path):  # pipe:, http(s)://, ... : brace-expanded, existence checked when read
        return list(braceexpand.braceexpand(path))
    urls: list[str] = []
    for item in braceexpand.braceexpand(os.path.expanduser(path.removeprefix("file://"))):
        if os.path.isdir(item):
            urls += sorted(LocalShard(str(p)) for p in Path(item).iterdir() if p.name.endswith(SHARD_EXTS))
        elif glob.has_magic(item):
            urls += sorted(LocalShard(p) for p in glob.glob(item))
        elif os.path.isfile(item):
            urls.append(LocalShard(item))
        else:
            raise ValueError(f"data source {path!r}: {item} does not exist")
    if not urls:
        raise ValueError(f"data source {path!r}: no shards found ({'/'.join(SHARD_EXTS)})")
    return urls


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


def demo_folder(demo_dir: str | Path) -> Path:
    """The demo data folder, generated first unless complete demo data is there."""
    return Path(ensure_demo_data(os.path.expanduser(demo_dir)))


@dataclass(frozen=True)
class DataSources:
    """A data section's train and held-out sources, the demo's filled in where none are configured."""

    train: list[Source]
    heldout: list[Source]
    demo_root: Optional[Path] = None  # the demo folder, when a default was filled from it

    def tokenizer_spec(self, data_cfg: DataConfig) -> str:
        """``data.tokenizer`` with "demo" replaced by the demo tokenizer's path (the folder resolved once)."""
        if data_cfg.tokenizer == "demo" and self.demo_root is not None:
            return str(self.demo_root / DEMO_TOKENIZER)
        return tokenizer_spec(data_cfg.tokenizer, data_cfg.demo_dir)


def tokenizer_spec(spec: str, demo_dir: str | Path) -> str:
    """A tokenizer spec for :func:`load_tokenizer`: "demo" -> the demo tokenizer's path (generated if need be)."""
    return str(demo_folder(demo_dir) / DEMO_TOKENIZER) if spec == "demo" else spec


def resolve_sources(data_cfg: DataConfig) -> DataSources:
    """Configured train/heldout sources, with the demo data filled in where empty.

    Every source is expanded once here so a typo fails now, naming the source,
    not inside a DataLoader worker, and before the demo data is generated for
    the sources left empty (a bad path is one line, not a demo build and then one line).
    """
    train, heldout = list(data_cfg.train), list(data_cfg.heldout)
    for src in train + heldout:
        expand_shards(src)
    root = None
    if not train or not heldout:
        root = demo_folder(data_cfg.demo_dir)
        demo_train = [] if train else [Source(path=str(root / "train"), weight=1.0)]
        demo_heldout = [] if heldout else [Source(path=str(root / "heldout"), weight=1.0)]
        for src in demo_train + demo_heldout:
            expand_shards(src)
        train, heldout = train or demo_train, heldout or demo_heldout
    return DataSources(train, heldout, root)
