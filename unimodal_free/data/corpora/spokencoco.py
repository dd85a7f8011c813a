"""SpokenCOCO: COCO 2014 pictures, their captions and a spoken recording of each (image+speech+text).

    python -m unimodal_free.data.corpora spokencoco SPOKENCOCO_DIR DST --images COCO2014_DIR
        [--karpathy dataset_coco.json]

SPOKENCOCO_DIR as published (Hsu et al. 2021, https://groups.csail.mit.edu/sls/downloads/placesaudio/):
``SpokenCOCO_train.json`` and ``SpokenCOCO_val.json``, each ``{"data": [{"image": "train2014/COCO_...jpg",
"captions": [{"text", "wav": "wavs/train/...wav", "speaker", "uttid"}]}]}``, and the ``wavs/`` folder.
``--images`` is the COCO 2014 folder holding ``train2014/`` and ``val2014/``. One sample per picture
with all its captions and recordings. Splits: the train JSON -> train, the val JSON -> heldout; with
``--karpathy`` Karpathy's split decides (train+restval -> train, val -> val, test -> heldout).
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import inside, read_json
from unimodal_free.data.corpora.groups import Group, entries, karpathy_splits, text_of, write_groups

FILES = {"train": "SpokenCOCO_train.json", "heldout": "SpokenCOCO_val.json"}


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="COCO 2014 folder (train2014/, val2014/)")
    parser.add_argument("--karpathy", type=Path, default=None, help="Karpathy's dataset_coco.json: its split")


def groups(src: Path, args):
    split_of = karpathy_splits(args.karpathy, args) if args.karpathy else None
    for default_split, name in FILES.items():
        path = src / name
        for i, entry in enumerate(entries(read_json(path, args.max_file_bytes), "data", path)):
            where = f"{path}: data[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("captions"), list):
                raise CorpusError(f"{where}: needs 'image' and a list 'captions'")
            image = inside(args.images, entry.get("image"), f"{where}.image", "--images")
            captions, recordings, speakers = [], [], []
            for j, cap in enumerate(entry["captions"]):
                if not isinstance(cap, dict):
                    raise CorpusError(f"{where}.captions[{j}]: not an object")
                captions.append(text_of(cap.get("text"), f"{where}.captions[{j}].text"))
                recordings.append(inside(src, cap.get("wav"), f"{where}.captions[{j}].wav", "SRC"))
                speakers.append(str(cap.get("speaker", "")))
            split = default_split
            if split_of is not None:
                if image.name not in split_of:
                    raise CorpusError(f"{where}: picture {image.name} is not in --karpathy {args.karpathy}")
                split = split_of[image.name][0]
            yield Group(image.stem, split, where, image, captions, recordings,
                        {"image_file": entry["image"], "speakers": speakers})


def convert(src: Path, dst: Path, args):
    return write_groups("spokencoco", groups(src, args), dst, args.maxcount)
