"""Rewrite paired shards into a partially paired corpus: which pairs alignment sees, and how many.

    python -m unimodal_free.data.rewriting.pairing SRC DST_DIR [--drop image+speech] [--paired 0.3] [--seed 0]
        [--maxcount N] [--maxsize BYTES]

SRC is any training source (folder, glob, brace pattern, URL) of WebDataset
shards; every sample of it is read once, with the reader's caps (a refused or
corrupt sample is skipped and counted).

``--paired F``: a seeded share F of the samples (drawn per key, so the choice
does not depend on shard order) keeps its pairing; every other sample is split
into single-modality samples with keys of their own and no pair id, so its
members never meet as positives. ``--drop A+B`` (repeatable): no output sample
holds both A and B. A sample that does is split into the largest groups that
do not: an image+speech+text triple becomes an image+text and a speech+text
sample (its text written twice), so every image and every recording stays in
the corpus and only the image<->speech pairs are gone.

Every output sample is its own pair (``json`` pair = its key, null when it has
one modality; pair ids shared across input samples are not carried over), and
its ``json`` keeps the input metadata plus ``from`` (the input key). The output is
shuffled over the whole corpus (seeded, two passes: random buckets, then each
bucket shuffled in memory), so the members of a split sample do not sit next to
each other in the stream. ``DST_DIR/pairing.json`` records the command and the
mix written; it is written last, so its presence means the corpus is complete.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from unimodal_free.config import DataConfig
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading.elements import DecodeError, read_meta, sample_modalities
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import SKIP, read_shard
from unimodal_free.data.rewriting.seeded import draw
from unimodal_free.data.writing.raw_samples import KeyMaker
from unimodal_free.data.writing.shard_writer import SIZES_FILE, ShardSink, WriteReport, parse_size
from unimodal_free.modalities import CAPTION_MODALITY, MODALITIES, member_modality
from unimodal_free.usage import ArgumentParser, usage_errors

STAMP = "pairing.json"
BUCKETS_DIR = ".pairing-buckets"  # first pass of the shuffle, removed when the corpus is written
# A bucket is shuffled in memory: this many buckets per input shard keeps one bucket about a shard's size.
BUCKETS_PER_SHARD = 1


class PairingError(ValueError):
    """Unusable arguments or output folder; the message is one line naming the option or path."""


def parse_drop(text: str) -> frozenset[str]:
    """'image+speech' -> {'image', 'speech'} (two different known modalities)."""
    parts = text.split("+")
    if len(parts) != 2 or len(set(parts)) != 2 or not set(parts) <= set(MODALITIES):
        raise PairingError(f"--drop {text!r}: expected two different modalities joined by '+' "
                           f"(of {', '.join(MODALITIES)}), e.g. image+speech")
    return frozenset(parts)


def groups(present: list[str], drop: Iterable[frozenset[str]], paired: bool) -> list[tuple[str, ...]]:
    """How one sample's modalities are regrouped into output samples.

    Unpaired: one sample per modality. Paired: the largest groups that hold no
    dropped combination (all of them, so a modality is dropped from no sample).
    """
    if not paired:
        return [(m,) for m in present]
    drop = list(drop)
    allowed = [g for r in range(len(present), 0, -1) for g in itertools.combinations(present, r)
               if not any(d <= set(g) for d in drop)]
    return [g for g in allowed if not any(set(g) < set(other) for other in allowed)]


def key_problem(key: str) -> Optional[str]:
    """Why a sample's key cannot be written into a shard (tarfile keeps undecodable name bytes as surrogates), or None."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "key is not UTF-8"
    return None


def regroup(sample: dict, meta: dict, group: tuple[str, ...], key: str) -> dict:
    """The output sample holding ``group``'s members of ``sample``, with its own key and pair id."""
    out = {"__key__": key}
    for modality in group:
        out.update({ext: data for ext, data in sample.items()
                    if not ext.startswith("__") and member_modality(ext) == modality})
    meta = {k: v for k, v in meta.items() if k not in ("pair", "modalities")}
    if CAPTION_MODALITY not in group:
        meta.pop("captions", None)  # the reader takes json captions as the text member
    meta.update({"from": sample["__key__"], "pair": key if len(group) > 1 else None, "modalities": list(group)})
    out["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return out


@dataclass
class PairingReport:
    read: int = 0  # input samples rewritten
    skipped: int = 0  # input samples refused by the reader or with unreadable json
    read_kinds: collections.Counter = field(default_factory=collections.Counter)
    kept: int = 0  # multi-modality input samples drawn to keep their pairing
    split: int = 0  # multi-modality input samples split into single-modality samples
    written: WriteReport = field(default_factory=WriteReport)

    @property
    def paired_ids(self) -> int:
        """Output samples with more than one modality: the pair ids the loader will see."""
        return sum(n for kind, n in self.written.kinds.items() if "+" in kind)

    def summary(self, out_dir) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.read_kinds.items()))
        multi = self.kept + self.split
        share = f" ({100 * self.kept / multi:.1f}%)" if multi else ""
        wrote = ", ".join(f"{k} {n}" for k, n in sorted(self.written.kinds.items()))
        return (f"read {self.read} samples ({kinds or 'none'}), skipped {self.skipped} unreadable; kept the pairing "
                f"of {self.kept} of {multi} multi-modality samples{share}, split {self.split}; wrote "
                f"{self.written.written} samples ({wrote or 'none'}) in {len(self.written.shards)} shards to "
                f"{out_dir}: {self.paired_ids} pair ids")


def _buckets_first_pass(urls: list[str], tmp: Path, drop: list[frozenset[str]], paired: float, seed: int,
                        data_cfg, report: PairingReport, counter: SkipCounter) -> list[Path]:
    """Read every input sample, regroup it, and drop each output sample into a random bucket."""
    rng = random.Random(f"pairing-buckets-{seed}")
    sinks = [ShardSink(tmp / f"{i:06d}", maxcount=1 << 62, maxsize=1 << 62)
             for i in range(max(1, BUCKETS_PER_SHARD * len(urls)))]
    make_key = KeyMaker()
    try:
        for url in urls:
            for sample in read_shard(url, counter, data_cfg):
                key = sample["__key__"]
                bad_key = key_problem(key)
                where = f"{url}:{key.encode('utf-8', 'surrogateescape') if bad_key else key}"  # bad bytes shown escaped
                if SKIP in sample or bad_key:
                    counter.skip(where, sample.get(SKIP) or bad_key)
                    continue
                try:
                    meta = read_meta(sample, where)  # the reader's own check: size, JSON (any depth), an object
                except DecodeError as exc:
                    counter.skip(where, exc.reason)
                    continue
                present = sample_modalities(sample)
                if "captions" in meta and CAPTION_MODALITY not in present:
                    present.append(CAPTION_MODALITY)
                if not present:
                    counter.skip(where, "no image/speech/text file in sample")
                    continue
                report.read += 1
                report.read_kinds["+".join(present)] += 1
                keep = draw(sample["__key__"], seed, "paired") < paired
                if len(present) > 1:
                    report.kept += keep
                    report.split += not keep
                parts = groups(present, drop, keep)
                for group in parts:
                    key = make_key(sample["__key__"] if len(parts) == 1 else f"{sample['__key__']}-{'-'.join(group)}")
                    sinks[rng.randrange(len(sinks))].write(regroup(sample, meta, group, key))
    finally:
        for sink in sinks:
            sink.close()
    return [sink.out_dir for sink in sinks if sink.sizes]


def rewrite(source: str, out_dir, drop: Iterable[str] = (), paired: float = 1.0, seed: int = 0,
            maxcount: Optional[int] = None, maxsize: int = 10**9,
            data_cfg: Optional[DataConfig] = None) -> PairingReport:
    """Write the partially paired corpus of ``source`` into ``out_dir``; returns what was read and written.

    ``maxcount`` None: as many shards as the input has (resampled training draws shards, so a
    corpus rewritten into one big shard would be read from the same start by every rank).
    """
    if not 0.0 <= paired <= 1.0:
        raise PairingError(f"--paired: must be a share in [0, 1], got {paired}")
    drops = [parse_drop(d) for d in drop]
    if maxcount is not None and maxcount < 1:
        raise PairingError(f"--maxcount: must be >= 1, got {maxcount}")
    out = Path(out_dir)
    if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists() or (out / STAMP).exists()):
        raise PairingError(f"{out}: already holds shards; write into an empty folder")
    try:
        urls = expand_shards(source)
    except ValueError as exc:
        raise PairingError(str(exc)) from None
    data_cfg = data_cfg or DataConfig()
    counter = SkipCounter("pairing")
    report = PairingReport()
    tmp = out / BUCKETS_DIR
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier run's first pass
    try:
        buckets = _buckets_first_pass(urls, tmp, drops, paired, seed, data_cfg, report, counter)
        rng = random.Random(f"pairing-shuffle-{seed}")
        total = sum(n for bucket in buckets for n in json.loads((bucket / SIZES_FILE).read_text()).values())
        maxcount = maxcount or max(1, -(-total // len(urls)))
        with ShardSink(out, maxcount, maxsize) as sink:
            for bucket in buckets:
                samples = [s for url in expand_shards(str(bucket)) for s in read_shard(url, counter, data_cfg)]
                rng.shuffle(samples)
                for sample in samples:
                    sample.pop("__url__", None)
                    sink.write(sample)
                    report.written.written += 1
                    report.written.kinds["+".join(json.loads(sample["json"])["modalities"])] += 1
        report.written.shards = dict(sink.sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.skipped = counter.count
    out.mkdir(parents=True, exist_ok=True)  # also when nothing was written: pairing.json says why
    stamp = {"source": source, "drop": sorted("+".join(sorted(d)) for d in drops), "paired": paired,
             "seed": seed, "read": report.read, "read_kinds": dict(report.read_kinds), "kept": report.kept,
             "split": report.split, "written": report.written.written, "kinds": dict(report.written.kinds),
             "paired_ids": report.paired_ids, "skipped": report.skipped,
             "skip_reasons": dict(counter.reasons.most_common())}
    (out / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return report


@usage_errors(PairingError, ValueError)
def main(argv: list[str] | None = None) -> int:
    """Usage errors (bad flags, a missing source, a bad share or --drop) exit 2; a failed write exits 1."""
    ap = ArgumentParser.from_docstring("python -m unimodal_free.data.rewriting.pairing", __doc__)
    ap.add_argument("source", help="input shards: folder, glob, brace pattern or URL")
    ap.add_argument("output_dir")
    ap.add_argument("--drop", action="append", default=[], metavar="A+B",
                    help="no output sample holds both A and B (repeatable), e.g. image+speech")
    ap.add_argument("--paired", type=float, default=1.0, help="share of samples that keep their pairing (1.0)")
    ap.add_argument("--seed", type=int, default=0, help="which samples keep their pairing, and the shuffle (0)")
    ap.add_argument("--maxcount", type=int, default=None,
                    help="samples per output shard (default: as many shards as the input has)")
    ap.add_argument("--maxsize", type=parse_size, default=10**9, help="bytes per output shard (default 1GB)")
    args = ap.parse_args(argv)
    try:
        report = rewrite(args.source, args.output_dir, args.drop, args.paired, args.seed, args.maxcount, args.maxsize)
    except OSError as exc:
        print(f"error: {exc.filename or args.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(report.summary(args.output_dir))
    return 0 if report.written.written else 1


if __name__ == "__main__":
    sys.exit(main())
