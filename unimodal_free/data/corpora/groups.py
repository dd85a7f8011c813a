"""Corpora of pictures with several captions/recordings: a picture and its captions and recordings
as one group, Karpathy's split files and Flickr's token files.

One group = one picture with all its captions (and the recordings of them): one shard sample, the
picture stored once. Training draws one caption (and that caption's recording) per step; the eval
keeps every caption and recording as its own row under the picture's pair id (see DESIGN.md,
"One picture, several captions").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import (
    ConversionReport, Dropped, inside, read_json, read_lines, write_conversion,
)
from unimodal_free.data.writing.raw_samples import RawSample

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
    for i, im in enumerate(entries(read_json(path, args.max_file_bytes, "--karpathy"), "images", path)):
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str) or im.get("split") not in KARPATHY:
            raise CorpusError(f"{where}: needs a string 'filename' and a 'split' in {sorted(KARPATHY)}")
        sentences = im.get("sentences", [])
        captions = [text_of(s.get("raw") if isinstance(s, dict) else s, f"{where}.sentences")
                    for s in (sentences if isinstance(sentences, list) else [])]
        out[im["filename"]] = (KARPATHY[im["split"]], captions)
    return out


def group_samples(groups: Iterable[Group]) -> Iterator[Union[RawSample, Dropped]]:
    """Each group as one raw sample for :func:`write_conversion`, without the files that are not there
    (each a :class:`Dropped`); captions stay. A group left with nothing is not written."""
    for group in groups:
        if group.image is not None and not group.image.is_file():
            yield Dropped(group.where, f"picture {group.image} missing", group.split, {"image": 1})
            group.image = None
        kept = []
        for path in group.recordings:
            if path.is_file():
                kept.append(path)
            else:
                yield Dropped(group.where, f"recording {path} missing", group.split, {"speech": 1})
        if group.image or group.captions or kept:
            yield RawSample(key=group.key, image=group.image, captions=group.captions or None,
                            recordings=kept or None, split=group.split, meta=dict(group.meta, source=group.where),
                            where=group.where)


def write_groups(corpus: str, groups: Iterable[Group], dst: Path, maxcount: int) -> ConversionReport:
    """:func:`write_conversion` of the groups."""
    return write_conversion(corpus, group_samples(groups), dst, maxcount)


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
    for picture, k, caption in pictures_with_captions(read_lines(token_path, args.max_file_bytes), token_path):
        by_picture.setdefault(picture, {})[k] = caption
    for picture, captions in by_picture.items():
        where = f"{token_path}: {picture}"
        image = inside(images, picture, where, "--images")
        ks = sorted(captions)
        recordings = [inside(wavs, f"{image.stem}_{k}.wav", f"{where}#{k}", "--wavs") for k in ks] if wavs else []
        yield Group(image.stem, split_of(picture), where, image, [captions[k] for k in ks], recordings,
                    {"image_file": picture})
