"""Split your shards into train and held-out, by pair id, stratified by modality combination.

    python -m unimodal_free.data.rewriting.split SRC DST_DIR [--heldout 0.1] [--seed 0] [--maxcount N] [--maxsize BYTES]

SRC is any training source (folder, glob, brace pattern, URL) of WebDataset
shards. Samples that share a pair id (``json`` "pair"; a sample without one is
its own group) stay together on one side, so no held-out picture has its
caption in training. Groups are counted per modality combination (the
modalities the group holds, e.g. image+speech+text, speech+text), and each
combination gives its own ``--heldout`` share to the held-out side (rounded;
at least one group of a combination that has two or more), chosen by a seeded
hash of the pair id, so the choice does not depend on shard order and a
smaller share holds a subset of a larger one's. Samples are copied byte for
byte but for ``json`` "split", set to train or heldout.

Written: ``DST_DIR/train/shard-*.tar``, ``DST_DIR/heldout/shard-*.tar`` (each
with sizes.json) and ``DST_DIR/split.json`` (the command and the counts per
combination, written last). Unreadable samples are skipped and counted.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional

from unimodal_free.config import DataConfig
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading.elements import DecodeError, read_meta, sample_modalities
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import SKIP, read_shard
from unimodal_free.data.rewriting.seeded import draw
from unimodal_free.data.writing.shard_writer import SIZES_FILE, ShardSink, parse_size
from unimodal_free.modalities import CAPTION_MODALITY, MODALITIES
from unimodal_free.usage import ArgumentParser, usage_errors

SPLITS = ("train", "heldout")
STAMP = "split.json"


class SplitError(ValueError):
    """Unusable arguments or output folder; one line naming the option or path."""


def combination(modalities: Iterable[str]) -> str:
    """{'text', 'image'} -> 'image+text' (MODALITIES order)."""
    present = set(modalities)
    return "+".join(m for m in MODALITIES if m in present)


def heldout_groups(group_kinds: dict[str, str], share: float, seed: int) -> set[str]:
    """The group ids (pair ids) of each combination that go to held-out: per combination, the round(share * n)
    ids of lowest seeded hash (at least one where n >= 2 and share > 0), so every combination is represented."""
    by_kind: dict[str, list[str]] = collections.defaultdict(list)
    for group, kind in group_kinds.items():
        by_kind[kind].append(group)
    chosen: set[str] = set()
    for groups in by_kind.values():
        k = round(share * len(groups))
        if share > 0 and k == 0 and len(groups) >= 2:
            k = 1
        chosen.update(sorted(groups, key=lambda g: (draw(g, seed, "heldout"), g))[:k])
    return chosen


def _samples(urls: list[str], counter: SkipCounter, data_cfg: DataConfig) -> Iterator[tuple[dict, dict, str]]:
    """(sample, its json, its group id) for each readable sample; the rest counted on ``counter``."""
    for url in urls:
        for sample in read_shard(url, counter, data_cfg):
            where = f"{url}:{sample['__key__']}"
            if SKIP in sample:
                counter.skip(where, sample[SKIP])
                continue
            try:
                meta = read_meta(sample, where)
            except DecodeError as exc:
                counter.skip(where, exc.reason)
                continue
            pair = meta.get("pair")
            yield sample, meta, f"pair:{pair}" if pair is not None else f"key:{sample['__key__']}"


def _modalities(sample: dict, meta: dict) -> list[str]:
    present = sample_modalities(sample)
    return present + [CAPTION_MODALITY] if "captions" in meta and CAPTION_MODALITY not in present else present


def split_corpus(source: str, out_dir, share: float = 0.1, seed: int = 0, maxcount: int = 10000,
                 maxsize: int = 10**9, data_cfg: Optional[DataConfig] = None) -> dict:
    """Write ``out_dir/{train,heldout}``; returns what split.json records. Reads the source twice
    (group ids and modalities first, then the samples), so memory does not grow with the corpus."""
    if not 0.0 <= share < 1.0:
        raise SplitError(f"--heldout: must be a share in [0, 1), got {share}")
    out = Path(out_dir)
    if any((out / s).is_dir() and any((out / s).iterdir()) for s in SPLITS) or (out / STAMP).exists():
        raise SplitError(f"{out}: already holds a split; write into an empty folder")
    try:
        urls = expand_shards(source)
    except ValueError as exc:
        raise SplitError(str(exc)) from None
    data_cfg = data_cfg or DataConfig()
    groups: dict[str, set[str]] = collections.defaultdict(set)
    for sample, meta, group in _samples(urls, SkipCounter("split"), data_cfg):
        groups[group].update(_modalities(sample, meta))
    kinds = {g: combination(m) for g, m in groups.items()}
    held = heldout_groups(kinds, share, seed)
    counts = {s: collections.Counter() for s in SPLITS}  # split -> combination -> samples
    counter = SkipCounter("split")
    sinks = {s: ShardSink(out / s, maxcount, maxsize) for s in SPLITS}
    try:
        for sample, meta, group in _samples(urls, counter, data_cfg):
            side = "heldout" if group in held else "train"
            sample = {k: v for k, v in sample.items() if k != "__url__"}
            sample["json"] = json.dumps({**meta, "split": side}, ensure_ascii=False, sort_keys=True).encode("utf-8")
            sinks[side].write(sample)
            counts[side][combination(_modalities(sample, meta))] += 1
    finally:
        for sink in sinks.values():
            sink.close()
    stamp = {"source": source, "heldout": share, "seed": seed, "skipped": counter.count,
             "skip_reasons": dict(counter.reasons.most_common()),
             "groups": {s: dict(collections.Counter(k for g, k in kinds.items() if (g in held) == (s == "heldout")))
                        for s in SPLITS},
             "samples": {s: dict(sorted(c.items())) for s, c in counts.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return stamp


def summary(stamp: dict, out_dir) -> str:
    def line(s: str) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in stamp["samples"][s].items())
        return f"{s} {sum(stamp['samples'][s].values())} samples ({kinds or 'none'})"

    return f"wrote {line('train')} and {line('heldout')} to {out_dir}; skipped {stamp['skipped']} unreadable"


@usage_errors(SplitError, ValueError)
def main(argv: list[str] | None = None) -> int:
    """Usage errors exit 2; a failed write exits 1, as does a source with nothing readable."""
    ap = ArgumentParser.from_docstring("python -m unimodal_free.data.rewriting.split", __doc__)
    ap.add_argument("source", help="input shards: folder, glob, brace pattern or URL")
    ap.add_argument("output_dir")
    ap.add_argument("--heldout", type=float, default=0.1, help="share of each combination's pair ids held out (0.1)")
    ap.add_argument("--seed", type=int, default=0, help="which pair ids are held out (0)")
    ap.add_argument("--maxcount", type=int, default=10000, help="samples per output shard (10000)")
    ap.add_argument("--maxsize", type=parse_size, default=10**9, help="bytes per output shard (default 1GB)")
    args = ap.parse_args(argv)
    try:
        stamp = split_corpus(args.source, args.output_dir, args.heldout, args.seed, args.maxcount, args.maxsize)
    except OSError as exc:
        print(f"error: {exc.filename or args.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(summary(stamp, args.output_dir))
    return 0 if any(stamp["samples"][s] for s in SPLITS) else 1


if __name__ == "__main__":
    sys.exit(main())
