"""Flickr30k: 31,783 pictures with 5 captions each (image+text).

    python -m unimodal_free.data.corpora flickr30k FLICKR30K_DIR DST [--karpathy dataset_flickr30k.json]
        [--images FLICKR30K_DIR/flickr30k-images] [--heldout 0.03] [--seed 0]

FLICKR30K_DIR as published (Young et al. 2014, https://shannon.cs.illinois.edu/DenotationGraph/):
``results_20130124.token`` (``<picture>.jpg#k<TAB>caption``) and the pictures in ``flickr30k-images/``.
With ``--karpathy`` (Karpathy's ``dataset_flickr30k.json``, the split open_clip and CLIP_benchmark
score on) its captions and split are used (train -> train, val -> val, test -> heldout) and no token file
is needed; without it a seeded-hash ``--heldout`` share of the pictures is held out.
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.data.corpora.groups import (
    Group, add_common_arguments, flickr_groups, hashed_split, inside, karpathy_splits, write_groups,
)


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, default=None, help="pictures (default SRC/flickr30k-images)")
    parser.add_argument("--karpathy", type=Path, default=None, help="Karpathy's dataset_flickr30k.json")
    parser.add_argument("--heldout", type=float, default=0.03, help="held-out share without --karpathy (0.03)")
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)


def karpathy_groups(images: Path, args):
    for name, (split, captions) in karpathy_splits(args.karpathy, args).items():
        image = inside(images, name, f"{args.karpathy}: {name}", "--images")
        yield Group(image.stem, split, f"{args.karpathy}: {name}", image, captions, meta={"image_file": name})


def convert(src: Path, dst: Path, args):
    images = args.images or src / "flickr30k-images"
    if args.karpathy:
        groups = karpathy_groups(images, args)
    else:
        groups = flickr_groups(src / "results_20130124.token", images,
                               lambda picture: hashed_split(picture, args.heldout, args.seed), args)
    return write_groups("flickr30k", groups, dst, args.maxcount)
