"""What the public-corpus converters share: a picture and its captions/recordings as one group, confined
paths, bounded corpus files, the Karpathy split, and the writer of DST/{train,heldout,...} + report.json.

One group = one picture with all its captions (and the recordings of them): one shard sample, the
picture stored once. Training draws one caption (and that caption's recording) per step; the eval
keeps every caption and recording as its own row under the picture's pair id (see DESIGN.md,
"One picture, several captions").
"""

from __future__ import annotations

import collections
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from unimodal_free.bounded_read import BoundedReadError, read_json_bounded, read_text_bounded
from unimodal_free.data.corpora.common import CorpusError, check_shares, draw
from unimodal_free.data.layouts import confined
from unimodal_free.data.raw_samples import RawSample, Skip
from unimodal_free.data.shard_writer import SIZES_FILE, write_shards

# A corpus file (SpokenCOCO_train.json is ~150 MB, Karpathy's dataset_coco.json ~140 MB) is read whole.
MAX_CORPUS_FILE_BYTES = 1 << 30
ITEMS = ("image", "speech", "text")  # what the report counts: pictures, recordings, captions
# Karpathy's split names -> ours: restval is the rest of COCO val2014 that his split trains on.
KARPATHY = {"train": "train", "restval": "train", "val": "val", "test": "heldout"}


@dataclass
class Group:
    """One picture with its captions and the recordings of them (recordings[i] speaks captions[i] when
    both lists are full), or any part of that; written as one shard sample."""

    key: str
    split: str
    where: str  # "FILE: entry" named by messages
    image: Path | None = None
    captions: list[str] = field(default_factory=list)
    recordings: list[Path] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass
class Dropped:
    """Items a converter could not take (a file that is missing): counted per modality, with the reason."""

    where: str
    reason: str
    items: dict[str, int]


def add_common_arguments(parser) -> None:
    parser.add_argument("--max-file-bytes", type=int, default=MAX_CORPUS_FILE_BYTES,
                        help=f"largest corpus file (JSON, token list) read (default {MAX_CORPUS_FILE_BYTES >> 20} MiB)")


def read_json(path: Path, args, option: str = "") -> Any:
    """A corpus JSON file, refused (one line naming it, and the ``option`` that gave it) when missing,
    larger than --max-file-bytes or not JSON."""
    try:
        return read_json_bounded(path, args.max_file_bytes, "--max-file-bytes")
    except BoundedReadError as e:
        raise CorpusError(f"{option} {e}".strip()) from None


def read_lines(path: Path, args) -> list[str]:
    """A corpus text file's lines (token file, split list), bounded like :func:`read_json`."""
    try:
        return read_text_bounded(path, args.max_file_bytes, "--max-file-bytes").splitlines()
    except BoundedReadError as e:
        raise CorpusError(str(e)) from None


def inside(root: Path, value: Any, where: str, root_name: str) -> Path:
    """``root / value`` for a path read from a corpus file; CorpusError (naming file and entry) for a
    non-string, an absolute path, '..' or a symbolic link out of ``root``."""
    if not isinstance(value, str) or not value:
        raise CorpusError(f"{where}: a path must be a non-empty string, got {value!r}")
    try:
        return confined(root, value, where, "path", root_name)
    except Skip as s:
        raise CorpusError(str(s)) from None


def entries(doc: Any, key: str, path: Path) -> list:
    """``doc[key]`` as a list of objects, or CorpusError naming the file and key."""
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise CorpusError(f"{path}: no list {key!r} at the top level (not the published layout)")
    return items


def text_of(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise CorpusError(f"{where}: a caption must be a string, got {type(value).__name__}")
    return value


def karpathy_splits(path: Path, args) -> dict[str, tuple[str, list[str]]]:
    """Karpathy's split file (dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json:
    ``images[].filename/.split/.sentences[].raw``): picture file name -> (our split, its captions)."""
    out = {}
    for i, im in enumerate(entries(read_json(path, args, "--karpathy"), "images", path)):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str) or im.get("split") not in KARPATHY:
            raise CorpusError(f"{where}: needs a string 'filename' and a 'split' in {sorted(KARPATHY)}")
        sentences = im.get("sentences", [])
        captions = [text_of(s.get("raw") if isinstance(s, dict) else s, f"{where}.sentences")
                    for s in (sentences if isinstance(sentences, list) else [])]
        out[im["filename"]] = (KARPATHY[im["split"]], captions)
    return out


def hashed_split(key: str, share: float, seed: int) -> str:
    """'heldout' for a seeded-hash ``share`` of pictures, else 'train' (corpora that publish no split)."""
    check_shares(heldout=share)
    return "heldout" if draw(key, seed, "heldout") < share else "train"


def existing(group: Group, dropped: list[Dropped]) -> Group:
    """The group without the files that are not there (each counted in ``dropped``); captions stay."""
    if group.image is not None and not group.image.is_file():
        dropped.append(Dropped(group.where, f"picture {group.image} missing", {"image": 1}))
        group.image = None
    kept = []
    for path in group.recordings:
        if path.is_file():
            kept.append(path)
        else:
            dropped.append(Dropped(group.where, f"recording {path} missing", {"speech": 1}))
    group.recordings = kept
    return group


@dataclass
class ConversionReport:
    """Per output split: samples per modality combination, pictures/recordings/captions read from the
    corpus files, written, and dropped (with the reasons), so every item is accounted for."""

    corpus: str
    splits: dict[str, dict] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def written(self) -> int:
        return sum(s["samples"] for s in self.splits.values())

    def as_dict(self) -> dict:
        return {"corpus": self.corpus, "splits": self.splits, "dropped": self.dropped}

    def table(self) -> str:
        lines = [f"{self.corpus}: {self.written()} samples"]
        for split, s in self.splits.items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["combinations"].items())) or "none"
            lines.append(f"  {split:8s} {s['samples']} samples ({kinds}) in {s['shards']} shards")
            for item in ITEMS:
                read, wrote = s["read"].get(item, 0), s["written"].get(item, 0)
                if read:
                    lines.append(f"           {item:6s} read {read}, written {wrote}, dropped {read - wrote}")
        lines += [f"  dropped: {line}" for line in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... {len(self.dropped) - 20} more in report.json")
        return "\n".join(lines)


def _raw(group: Group) -> RawSample:
    meta = dict(group.meta, source=group.where)
    return RawSample(key=group.key, image=group.image, captions=group.captions or None,
                     recordings=group.recordings or None, split=group.split, meta=meta, where=group.where)


def write_groups(corpus: str, groups: Iterable[Group], dst: Path, maxcount: int) -> ConversionReport:
    """Write each split's groups to ``dst/<split>/shard-*.tar`` and ``dst/report.json``; returns the report."""
    if maxcount < 1:
        raise CorpusError(f"--maxcount: must be at least 1, got {maxcount}")
    dropped: list[Dropped] = []
    by_split: dict[str, list[Group]] = collections.defaultdict(list)
    read: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for group in groups:
        read[group.split].update(image=int(group.image is not None), speech=len(group.recordings),
                                 text=len(group.captions))
        by_split[group.split].append(existing(group, dropped))
    for split in by_split:
        out = dst / split
        if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists()):
            raise CorpusError(f"{out} already holds shards; write into an empty folder")
    report = ConversionReport(corpus, dropped=[f"{d.where}: {d.reason}" for d in dropped])
    for split in sorted(by_split, key=lambda s: (s != "train", s)):
        groups_here = [g for g in by_split[split] if g.image or g.captions or g.recordings]
        written = write_shards(map(_raw, groups_here), dst / split, maxcount, split=split, log=io.StringIO(),
                               progress=False)
        report.dropped += written.skips
        report.splits[split] = {"samples": written.written, "shards": len(written.shards),
                                "combinations": dict(written.kinds), "read": dict(read[split]),
                                "written": dict(written.items)}
    (dst / "report.json").write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    return report


def pictures_with_captions(lines: list[str], path: Path) -> Iterator[tuple[str, int, str]]:
    """Flickr's token files (``Flickr8k.token.txt``, ``results_20130124.token``): ``<img>.jpg#k<TAB>caption``
    lines -> (picture file name, k, caption); a line in another form is a CorpusError naming it."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        picture, hash_, k = name.partition("#")
        if not tab or not hash_ or not k.isdigit():
            raise CorpusError(f"{path}:{lineno}: not '<picture>#<k><TAB><caption>'")
        yield picture, int(k), caption.strip()



def flickr_groups(token_path: Path, images: Path, split_of, args, wavs: Path | None = None) -> Iterator[Group]:
    """One group per picture of a Flickr token file, its captions in ``#k`` order; with ``wavs`` the
    recording ``wavs/<picture stem>_<k>.wav`` of each caption (Flickr Audio Captions). ``split_of(name)``
    gives a picture's split."""
    by_picture: dict[str, dict[int, str]] = {}
    for picture, k, caption in pictures_with_captions(read_lines(token_path, args), token_path):
        by_picture.setdefault(picture, {})[k] = caption
    for picture, captions in by_picture.items():
        where = f"{token_path}: {picture}"
        image = inside(images, picture, where, "--images")
        ks = sorted(captions)
        recordings = [inside(wavs, f"{image.stem}_{k}.wav", f"{where}#{k}", "--wavs") for k in ks] if wavs else []
        yield Group(image.stem, split_of(picture), where, image, [captions[k] for k in ks], recordings,
                    {"image_file": picture})
