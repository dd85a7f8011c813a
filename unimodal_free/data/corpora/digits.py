"""A small real labelled corpus that ships inside scikit-learn: 1,797 handwritten digits, captioned and spoken.

    python -m unimodal_free.data.corpora.digits OUTPUT_DIR [--size 64] [--heldout 0.2] [--seed 0] [--limit N]

``sklearn.datasets.load_digits`` (the UCI optical digits test set, 8x8 pixels of 17 grey levels,
in the scikit-learn wheel: nothing is downloaded) becomes one image + speech + text sample per
digit, labelled {"digit": "7"}:

    image   the 8x8 digit, dark ink on white, scaled up by nearest neighbour to ``--size`` pixels
            (default 64: at ``joint.json``'s image_size 64 / patch_size 8 the reader takes the
            picture as it is and every patch is exactly one original pixel; nearest keeps the 17
            grey levels as they are, where bilinear would invent in-between values)
    text    "a handwritten seven" and a few other templates
    speech  the number word ("seven") spoken by espeak-ng with a varied voice, speed and pitch
            (the demo's voices and synthesis), 16 kHz mono FLAC

A ``--heldout`` share of each digit is kept for evaluation (the samples of that digit whose
seeded hash of the key is lowest); template and voice are seeded hashes of the key too. The
same arguments give byte-identical files (a recording also depends on the words spoken with it
in one espeak-ng call, so on ``--limit``). Written:

    OUT/images/<key>.png, OUT/speech/<key>.flac
    OUT/train.jsonl, OUT/heldout.jsonl   manifests for ``python -m unimodal_free.data.writing.shards manifest``
    OUT/classes.json                     class names and caption templates for ``eval zeroshot --classes``

Needs scikit-learn (a dependency) and espeak-ng (``apt-get install espeak-ng``).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimodal_free.data.corpora.common import CorpusError, check_shares
from unimodal_free.data.demo.scenes import PITCHES, SPEEDS, VOICES, DemoDataError
from unimodal_free.data.demo.speech import encode_speech, speech_batches, synth_batch
from unimodal_free.data.rewriting.seeded import draw
from unimodal_free.usage import ArgumentParser, usage_errors

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten {word}",
    "the digit {word} written by hand",
    "a scanned handwritten {word}",
    "the number {word}",
)
GREY_LEVELS = 16  # load_digits' pixel values run 0..16


@dataclass(frozen=True)
class Utterance:
    """One number word to speak (what demo/speech.py's synthesis reads)."""

    caption: str
    voice: str
    speed: int
    pitch: int


def load() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) in 0..16, targets (N,) in 0..9) from the copy inside scikit-learn."""
    from sklearn.datasets import load_digits  # heavy: imported only to build the corpus

    digits = load_digits()
    return digits.images, digits.target


def picture(pixels: np.ndarray, size: int) -> bytes:
    """(8, 8) grey levels 0..16 -> PNG bytes of a ``size`` x ``size`` greyscale picture, dark ink on white."""
    from PIL import Image

    grey = np.rint(255 - pixels * (255 / GREY_LEVELS)).astype(np.uint8)  # (8, 8), 16 -> black ink
    scale = size // grey.shape[0]
    big = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))  # (size, size): nearest neighbour
    buf = io.BytesIO()
    Image.fromarray(big, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def pick(options: tuple, key: str, seed: int, what: str):
    return options[int(draw(key, seed, what) * len(options))]


def build(out_dir, size: int = 64, heldout: float = 0.2, seed: int = 0, limit: int | None = None,
          workers: int = 2) -> dict[str, dict[str, int]]:
    """Write the corpus folder; returns {split: {digit: samples}}."""
    check_shares(heldout=heldout)
    if size < 8 or size % 8:
        raise CorpusError(f"--size: must be a multiple of 8 (the digits are 8x8 pixels), got {size}")
    if limit is not None and limit < 1:
        raise CorpusError(f"--limit: must be at least 1, got {limit}")
    images, targets = load()
    keys = [f"digit-{i:04d}" for i in range(len(targets))][:limit]
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "speech").mkdir(parents=True, exist_ok=True)
    held = set()
    for digit in range(len(WORDS)):  # stratified: each digit held out in the same share
        group = sorted((k for i, k in enumerate(keys) if targets[i] == digit), key=lambda k: draw(k, seed, "heldout"))
        held |= set(group[:round(heldout * len(group))])
    spoken = [Utterance(WORDS[targets[i]], pick(VOICES, k, seed, "voice"), pick(SPEEDS, k, seed, "speed"),
                        pick(PITCHES, k, seed, "pitch")) for i, k in enumerate(keys)]
    batches = speech_batches(spoken)
    if shutil.which("espeak-ng") is None:
        raise CorpusError("espeak-ng not found: it speaks the number words; apt-get install espeak-ng")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # espeak-ng runs as a subprocess: threads suffice
            for batch, waves in zip(batches, pool.map(lambda b: synth_batch([spoken[i] for i in b]), batches)):
                for i, (wav, sr) in zip(batch, waves):
                    (out / "speech" / f"{keys[i]}.flac").write_bytes(encode_speech(wav, sr, "flac"))
    except DemoDataError as e:  # espeak-ng failed (e.g. a voice it lacks)
        raise CorpusError(str(e)) from None
    lines: dict[str, list[dict]] = {"train": [], "heldout": []}
    for i, key in enumerate(keys):
        split = "heldout" if key in held else "train"
        word = WORDS[targets[i]]
        (out / "images" / f"{key}.png").write_bytes(picture(images[i], size))
        lines[split].append({
            "key": key, "image": f"images/{key}.png", "speech": f"speech/{key}.flac", "split": split,
            "text": pick(TEMPLATES, key, seed, "caption").format(word=word), "label": {"digit": str(targets[i])},
            "voice": spoken[i].voice, "source": f"scikit-learn load_digits #{i}"})
    # The class file of `python -m unimodal_free.eval zeroshot --classes`: label value -> the word captions use.
    classes = {"field": "digit", "classnames": {str(d): w for d, w in enumerate(WORDS)},
               "templates": [t.replace("{word}", "{c}") for t in TEMPLATES]}
    (out / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
    counts = {}
    for split, rows in lines.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        per_digit = [r["label"]["digit"] for r in rows]
        counts[split] = {d: per_digit.count(d) for d in sorted(set(per_digit))}
    return counts


@usage_errors(CorpusError)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.data.corpora.digits", description=__doc__.split("\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--size", type=int, default=64, help="picture side in pixels, a multiple of 8 (default 64)")
    ap.add_argument("--heldout", type=float, default=0.2, help="share of each digit held out for evaluation (0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N digits of the set (a quick try)")
    args = ap.parse_args(argv)
    counts = build(args.output_dir, args.size, args.heldout, args.seed, args.limit)
    for split, per_digit in counts.items():
        print(f"{split}: {sum(per_digit.values())} samples (per digit " +
              ", ".join(f"{d}: {n}" for d, n in per_digit.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
