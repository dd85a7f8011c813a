"""Places Audio Captions (400k): Places205 pictures, each with one spoken description (image+speech).

    python -m unimodal_free.data.corpora places-audio PLACESAUDIO_DIR DST --images PLACES205_DIR

PLACESAUDIO_DIR as published (Harwath et al. 2016/2018, https://groups.csail.mit.edu/sls/downloads/placesaudio/):
``metadata/{train,dev_seen,dev_unseen,test_seen,test_unseen}_2020.json``, each ``{"image_base_path",
"audio_base_path", "data": [{"wav": "wavs/...wav", "image": "a/abbey/...jpg", "uttid", "speaker"}]}``,
and ``wavs/``. The two base paths name the publisher's machine: recordings are found under
PLACESAUDIO_DIR and pictures under ``--images``, and every entry must stay inside its folder.
Splits: train_2020 -> train, dev_seen_2020 -> heldout, the others under their own names.
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import inside, read_json
from unimodal_free.data.corpora.groups import Group, entries, write_groups

SPLITS = {"train_2020.json": "train", "dev_seen_2020.json": "heldout", "dev_unseen_2020.json": "dev_unseen",
          "test_seen_2020.json": "test_seen", "test_unseen_2020.json": "test_unseen"}


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="Places205 pictures folder")


def groups(src: Path, args):
    found = [name for name in SPLITS if (src / "metadata" / name).exists()]
    if "train_2020.json" not in found:
        raise CorpusError(f"{src / 'metadata' / 'train_2020.json'}: missing file (not the published layout)")
    for name in found:
        path = src / "metadata" / name
        for i, entry in enumerate(entries(read_json(path, args.max_file_bytes), "data", path)):
            where = f"{path}: data[{i}]"
            if not isinstance(entry, dict):
                raise CorpusError(f"{where}: not an object")
            image = inside(args.images, entry.get("image"), f"{where}.image", "--images")
            wav = inside(src, entry.get("wav"), f"{where}.wav", "SRC")
            yield Group(str(entry.get("uttid") or wav.stem), SPLITS[name], where, image, recordings=[wav],
                        meta={"speaker": str(entry.get("speaker", "")), "image_file": entry["image"]})


def convert(src: Path, dst: Path, args):
    return write_groups("places-audio", groups(src, args), dst, args.maxcount)
