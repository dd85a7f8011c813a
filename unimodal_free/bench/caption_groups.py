"""The other storage of a picture with several captions, to measure against ours: one sample per caption.

    python -m unimodal_free.bench.caption_groups GROUP_SHARDS OUT

Reads shards with one sample per picture (all its captions as .txt lines and their recordings as
"0.flac", "1.flac", ...: what ``python -m unimodal_free.data.corpora`` writes) and writes OUT with one
sample per caption: the picture repeated in each, the caption's recording, the caption, and the
picture's key as pair id. Prints the bytes of both; time both with ``python -m unimodal_free.bench.loader``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unimodal_free.config import DataConfig
from unimodal_free.data.reading.elements import members, read_meta
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import read_shard
from unimodal_free.data.writing.shard_writer import ShardSink
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.modalities import MODALITY, member_modality
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors


def per_caption(sample: dict) -> list[dict]:
    """One group sample -> one sample per caption (recording i goes with caption i)."""
    meta = read_meta(sample, sample["__key__"])
    captions = sample["txt"].decode("utf-8").splitlines()
    recordings = members(sample, "speech")
    image = next(((ext, sample[ext]) for ext in MODALITY["image"].extensions if ext in sample), None)
    speech_ext = next((ext.rsplit(".", 1)[-1] for ext in sample if member_modality(ext) == "speech"), None)
    out = []
    for i, caption in enumerate(captions):
        one = {"__key__": f"{sample['__key__']}-{i}", "txt": caption.encode("utf-8")}
        names = ["text"]
        if image is not None:
            one[image[0]] = image[1]
            names.insert(0, "image")
        if i < len(recordings):
            one[speech_ext] = recordings[i]
            names.insert(len(names) - 1, "speech")
        one["json"] = json.dumps({"pair": sample["__key__"], "split": meta.get("split", "train"),
                                  "modalities": names}).encode("utf-8")
        out.append(one)
    return out


def total_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("shard-*.tar"))


@usage_errors()
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.bench.caption_groups", description=__doc__.split("\n")[0])
    ap.add_argument("shards", type=Path, help="folder of group shards")
    ap.add_argument("out", type=Path, help="output folder (one sample per caption)")
    args = ap.parse_args(argv)
    counter, groups, captions = SkipCounter("caption_groups"), 0, 0
    try:
        urls = expand_shards(str(args.shards))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if any(args.out.glob("shard-*.tar")):
        raise UsageError(f"{args.out} already holds shards; write into an empty folder")
    with ShardSink(args.out) as sink:
        for url in urls:
            for sample in read_shard(url, counter, DataConfig()):
                groups += 1
                for one in per_caption(sample):
                    sink.write(one)
                    captions += 1
    a, b = total_bytes(args.shards), total_bytes(args.out)
    print(f"one sample per picture:  {groups} samples, {a} bytes")
    print(f"one sample per caption:  {captions} samples, {b} bytes ({b / max(a, 1):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
