"""Flickr30k: 31,783 pictures with 5 captions each (image+text).

    python -m unimodal_free.data.corpora flickr30k FLICKR30K_DIR DST [--karpathy dataset_flickr30k.json]
        [--images FLICKR30K_DIR/flickr30k-images] [--heldout 0.03] [--seed 0]

FLICKR30K_DIR as published (Young et al. 2014, https://shannon.cs.illinois.edu/DenotationGraph/):
``results_20130124.token`` (``<picture>.jpg#k<TAB>caption``) and the pictures in ``flickr30k-images/``.
With ``--karpathy`` (Karpathy's ``dataset_flickr30k.json``, the split open_clip and CLIP_benchmark
score on) its captions and split are used (train -> train, val -> val, test -> heldout) and no token file
is needed; without it a seeded ``--heldout`` share of the pictures is held out (``data.split``'s choice).
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.data.corpora.conversion import inside, seeded_heldout
from unimodal_free.data.corpora.groups import Group, flickr_groups, karpathy_splits, write_groups


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, default=None, help="pictures (default SRC/flickr30k-images)")
    parser.add_argument("--karpathy", type=Path, default=None, help="Karpathy's dataset_flickr30k.json")
    parser.add_argument("--heldout", type=float, default=0.03, help="held-out share without --karpathy (0.03)")
    parser.add_argument("--seed", type=int, default=0)


def karpathy_groups(images: Path, args):
    for name, (split, captions) in karpathy_splits(args.karpathy, args).items():
        image = inside(images, name, f"{args.karpathy}: {name}", "--images")
        yield Group(image.stem, split, f"{args.karpathy}: {name}", image, captions, meta={"image_file": name})


def convert(src: Path, dst: Path, args):
    images = args.images or src / "flickr30k-images"
    if args.karpathy:
        groups = karpathy_groups(images, args)
    else:
        groups = list(flickr_groups(src / "results_20130124.token", images, lambda picture: "train", args))
        held = seeded_heldout([g.meta["image_file"] for g in groups], args.heldout, args.seed)
        for group in groups:
            group.split = "heldout" if group.meta["image_file"] in held else "train"
    return write_groups("flickr30k", groups, dst, args.maxcount)
