"""img2dataset's WebDataset output read as it is: every sample decoded once with the reader's caps to
count what training will see, and DST/train and DST/heldout linked to the shards (see img2dataset.py).
Its own module because the shard reader pulls in torch, which the other converters' ``--help`` need not wait for."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from unimodal_free.config import DataConfig
from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import ITEMS, ConversionReport, check_empty
from unimodal_free.data.loading.sources import SHARD_EXTS
from unimodal_free.data.reading.elements import DecodeError, read_meta, sample_modalities
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.media import BadMedia, check_audio, decode_image_rgb, decode_text
from unimodal_free.data.reading.samples import SKIP, read_shard
from unimodal_free.modalities import MODALITY

SNIPPET = "config-snippet.json"


def _problem(sample: dict, where: str) -> tuple[list[str], str | None]:
    """(modalities the sample holds, why training could not use it or None): the reader's caps and decoders."""
    if SKIP in sample:
        return [], sample[SKIP]
    try:
        meta = read_meta(sample, where)
    except DecodeError as e:
        return [], e.reason
    present = sample_modalities(sample)
    if not present and "captions" not in meta:
        return [], "no image/speech/text file in sample"
    decode = {"image": decode_image_rgb, "speech": check_audio, "text": decode_text}
    for m in present:
        data = next(v for k, v in sample.items() if k in MODALITY[m].extensions)
        try:
            decode[m](data)
        except BadMedia as e:
            return present, f"{m}: {e}"
    return present, None


def _link(shards: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        os.symlink(shard.resolve(), folder / shard.name)


def read_as_is(src: Path, dst: Path, heldout_shards: int) -> ConversionReport:
    shards = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(SHARD_EXTS))
    if heldout_shards < 0 or heldout_shards >= len(shards):
        raise CorpusError(f"--heldout-shards {heldout_shards}: {src} has {len(shards)} shards, so between 0 and "
                          f"{len(shards) - 1} can be held out (python -m unimodal_free.data.rewriting.split splits by pair id)")
    check_empty(dst)
    sides = {"train": shards[:len(shards) - heldout_shards], "heldout": shards[len(shards) - heldout_shards:]}
    report = ConversionReport("img2dataset")
    data_cfg = DataConfig()
    for split, files in sides.items():
        if not files:
            continue
        kinds: collections.Counter = collections.Counter()
        read = collections.Counter(dict.fromkeys(ITEMS, 0))
        written: collections.Counter = collections.Counter()
        counter = SkipCounter("img2dataset")
        for shard in files:
            broken = counter.count  # read_shard counts a shard that breaks off there; refused samples come back
            for sample in read_shard(str(shard), counter, data_cfg):
                where = f"{shard}:{sample['__key__']}"
                present, why = _problem(sample, where)
                read.update(present)
                if why:
                    report.dropped.append(f"{where}: {why}")
                else:
                    kinds["+".join(present)] += 1
                    written.update(present)
            if counter.count > broken:
                report.dropped.append(f"{shard}: the shard breaks off (corrupt or truncated tar); the rest is unread")
        _link(files, dst / split)
        report.splits[split] = {"samples": sum(kinds.values()), "shards": len(files), "combinations": dict(kinds),
                                "read": dict(read), "written": dict(written)}
    report.save(dst)
    snippet = {"data": {side: [{"path": str((dst / side).resolve()), "weight": 1.0}] for side in report.splits}}
    (dst / SNIPPET).write_text(json.dumps(snippet, indent=1) + "\n")
    return report
