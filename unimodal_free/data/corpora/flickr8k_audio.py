"""Flickr8k with the Flickr Audio Captions: 8,000 pictures, 5 captions each and a recording of each caption.

    python -m unimodal_free.data.corpora flickr8k-audio FLICKR8K_DIR DST
        [--images FLICKR8K_DIR/Flicker8k_Dataset] [--wavs FLICKR8K_DIR/flickr_audio/wavs]

FLICKR8K_DIR as published: Flickr8k_text.zip (Hodosh et al. 2013) gives ``Flickr8k.token.txt``
(``<picture>.jpg#k<TAB>caption``) and ``Flickr_8k.{train,dev,test}Images.txt``; Flickr8k_Dataset.zip the
pictures (folder ``Flicker8k_Dataset/``); flickr_audio.tar.gz (Harwath & Glass 2015,
https://groups.csail.mit.edu/sls/downloads/flickraudio/) the recordings ``flickr_audio/wavs/<picture>_<k>.wav``.
Splits: trainImages -> train, devImages -> val, testImages -> heldout; a picture in no list -> train.
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.data.corpora.conversion import read_lines
from unimodal_free.data.corpora.groups import flickr_groups, write_groups

SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
               "heldout": "Flickr_8k.testImages.txt"}


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, default=None, help="pictures (default SRC/Flicker8k_Dataset)")
    parser.add_argument("--wavs", type=Path, default=None, help="recordings (default SRC/flickr_audio/wavs)")


def convert(src: Path, dst: Path, args):
    split_of = {}
    for split, name in SPLIT_FILES.items():
        split_of.update((line.strip(), split) for line in read_lines(src / name, args.max_file_bytes) if line.strip())
    groups = flickr_groups(src / "Flickr8k.token.txt", args.images or src / "Flicker8k_Dataset",
                           lambda picture: split_of.get(picture, "train"), args,
                           wavs=args.wavs or src / "flickr_audio" / "wavs")
    return write_groups("flickr8k-audio", groups, dst, args.maxcount)
