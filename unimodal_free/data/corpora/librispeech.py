"""LibriSpeech (OpenSLR 12): read English audiobooks -> speech+text shards, labelled {"speaker": ID}.

    python -m unimodal_free.data.corpora librispeech LibriSpeech/ DST [--heldout-subsets dev-clean,test-clean]
    python -m unimodal_free.data.corpora librispeech LibriSpeech/train-clean-100 DST --heldout 0.02

The published layout (LibriSpeech's README.TXT, www.openslr.org/12):
``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter folder, a line ``<speaker>-<chapter>-<utterance> TEXT``
per recording. SRC is either the ``LibriSpeech`` folder (subsets such as train-clean-100, dev-clean,
test-clean inside it: the ``--heldout-subsets`` go to held-out, default every dev-* and test-* subset)
or one subset folder (then a seeded ``--heldout`` share of its utterances is held out). A transcript
line whose recording is missing or undecodable, and a recording no transcript line names, are dropped
and listed in the report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Union

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import ConversionReport, inside, seeded_heldout, write_conversion
from unimodal_free.data.writing.layouts import SPEECH_SUFFIXES, _sorted_files, iter_librispeech
from unimodal_free.data.writing.raw_samples import RawSample, Skip

SUBSET = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


def add_arguments(parser) -> None:
    parser.add_argument("--heldout-subsets", default=None, metavar="A,B",
                        help="subsets written as held-out when SRC holds subsets (default: every dev-* and test-*)")
    parser.add_argument("--heldout", type=float, default=0.02,
                        help="share of utterances held out when SRC is one subset (default 0.02)")
    parser.add_argument("--seed", type=int, default=0, help="which utterances --heldout picks (default 0)")


def subsets(src: Path) -> list[Path]:
    """The subset folders of a ``LibriSpeech`` folder, or [] when SRC is a subset itself."""
    return sorted(p for p in src.iterdir() if p.is_dir() and SUBSET.match(p.name))


def _checked(src: Path, folder: Path) -> Iterator[Union[RawSample, Skip]]:
    """``iter_librispeech`` of one subset with every path confined to SRC, and the recordings that no
    transcript line names as Skips."""
    named: set[Path] = set()
    for raw in iter_librispeech(folder):
        if isinstance(raw, RawSample):
            where = raw.where
            if "/" in raw.key or "\\" in raw.key or ".." in raw.key:
                raise CorpusError(f"{where}: entry {raw.key!r} refused: an utterance id names no other folder")
            raw.speech = inside(src, str(raw.speech.relative_to(src)), where, "SRC")
            named.add(raw.speech)
        yield raw
    for audio in _sorted_files(folder, SPEECH_SUFFIXES):
        # a linked folder out of SRC is refused, not read
        if inside(src, str(audio.relative_to(src)), str(audio), "SRC") not in named:
            yield Skip(audio, "recording that no transcript line names")


def samples(src: Path, args) -> Iterator[Union[RawSample, Skip]]:
    found = subsets(src)
    if found:
        held = set(args.heldout_subsets.split(",")) if args.heldout_subsets else \
            {p.name for p in found if not p.name.startswith("train-")}
        unknown = held - {p.name for p in found}
        if unknown:
            raise CorpusError(f"--heldout-subsets: {', '.join(sorted(unknown))} not in {src} "
                              f"(found {', '.join(p.name for p in found)})")
        for folder in found:
            for raw in _checked(src, folder):
                if isinstance(raw, RawSample):
                    raw.split = "heldout" if folder.name in held else "train"
                    raw.meta["subset"] = folder.name
                yield raw
        return
    if args.heldout_subsets:
        raise CorpusError(f"--heldout-subsets: {src} holds no subset folders (train-clean-100, dev-clean, ...)")
    items = list(_checked(src, src))
    held = seeded_heldout([r.key for r in items if isinstance(r, RawSample)], args.heldout, args.seed)
    for raw in items:
        if isinstance(raw, RawSample):
            raw.split = "heldout" if raw.key in held else "train"
        yield raw


def convert(src: Path, dst: Path, args) -> ConversionReport:
    if not src.is_dir():
        raise CorpusError(f"{src}: not a folder (LibriSpeech/ or one of its subsets)")
    return write_conversion("librispeech", samples(src, args), dst, args.maxcount)
