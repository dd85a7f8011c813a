"""COCO captions: the COCO pictures with their (about 5) captions each (image+text).

    python -m unimodal_free.data.corpora coco-captions COCO_DIR DST [--year 2014] [--karpathy dataset_coco.json]

COCO_DIR as published (Chen et al. 2015, https://cocodataset.org/#download): ``annotations/captions_train2014.json``
and ``annotations/captions_val2014.json`` (``images[].id/.file_name``, ``annotations[].image_id/.caption``) and
the pictures in ``train2014/`` and ``val2014/`` (``--year 2017``: the 2017 files and folders). Splits: the
train file -> train, the val file -> heldout; with ``--karpathy`` (2014 only) Karpathy's split decides
(train+restval -> train, val -> val, test -> heldout: the 5k test pictures open_clip scores on).
"""

from __future__ import annotations

import collections
from pathlib import Path

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import inside, read_json
from unimodal_free.data.corpora.groups import Group, entries, karpathy_splits, text_of, write_groups


def add_arguments(parser) -> None:
    parser.add_argument("--year", choices=("2014", "2017"), default="2014")
    parser.add_argument("--karpathy", type=Path, default=None, help="Karpathy's dataset_coco.json: its split")


def groups(src: Path, args):
    if args.karpathy and args.year != "2014":
        raise CorpusError("--karpathy: Karpathy's split is of COCO 2014 (use --year 2014)")
    split_of = karpathy_splits(args.karpathy, args) if args.karpathy else None
    for part, default_split in (("train", "train"), ("val", "heldout")):
        path = src / "annotations" / f"captions_{part}{args.year}.json"
        doc = read_json(path, args.max_file_bytes)
        captions = collections.defaultdict(list)
        for i, ann in enumerate(entries(doc, "annotations", path)):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise CorpusError(f"{path}: annotations[{i}]: needs 'image_id' and 'caption'")
            captions[ann["image_id"]].append(text_of(ann.get("caption"), f"{path}: annotations[{i}].caption"))
        folder = src / f"{part}{args.year}"
        for i, im in enumerate(entries(doc, "images", path)):
            where = f"{path}: images[{i}]"
            if not isinstance(im, dict):
                raise CorpusError(f"{where}: not an object")
            image = inside(folder, im.get("file_name"), f"{where}.file_name", f"{part}{args.year}/")
            split = default_split
            if split_of is not None:
                if image.name not in split_of:
                    raise CorpusError(f"{where}: picture {image.name} is not in --karpathy {args.karpathy}")
                split = split_of[image.name][0]
            yield Group(image.stem, split, where, image, captions.pop(im.get("id"), []),
                        meta={"image_id": im.get("id")})
        for image_id, orphans in captions.items():  # captions of a picture the file does not list: kept as text
            yield Group(f"{part}{args.year}-caption-of-{image_id}", default_split, f"{path}: image_id {image_id}",
                        captions=orphans, meta={"image_id": image_id})


def convert(src: Path, dst: Path, args):
    return write_groups("coco-captions", groups(src, args), dst, args.maxcount)
