"""A small real corpus from an installed icon theme: pictures, their names as captions, a few spoken.

    python -m unimodal_free.data.corpora.icons OUTPUT_DIR [--theme /usr/share/icons/Adwaita]
        [--size 48x48] [--speech 0.08] [--text-only 0.1] [--heldout 0.15] [--seed 0] [--limit N]

Freedesktop icon names describe what the icon shows ("media-playback-start",
"battery-full", "face-cool"), so every full-colour icon of the theme becomes a
picture with the caption "media playback start", labelled with its category
{"category": "actions"}: the theme's context folder (actions, devices, status, ...;
for an icon kept in the theme's "legacy" folder, the folder of its symbolic twin
when there is one). A ``--speech`` share of them
also gets the caption spoken by espeak-ng (a few voices), and names that the
theme only has as monochrome "-symbolic" icons become text-only lines (as many
as ``--text-only`` of all samples). A ``--heldout`` share of the pictures is
kept for retrieval eval, stratified so that it holds the same share of the
spoken ones. Selection is by a seeded hash of the icon name, so
the result does not depend on file-system order. Written:

    OUT/images/<name>.png   copies of the theme's PNGs (the folder is self-contained)
    OUT/speech/<name>.wav   espeak-ng recordings
    OUT/train.jsonl, OUT/heldout.jsonl   manifests for ``python -m unimodal_free.data.writing.shards manifest``

Debian: ``apt-get install adwaita-icon-theme espeak-ng`` (346 full-colour 48x48
icons and 285 symbolic-only names in Debian 12's adwaita-icon-theme 43).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from unimodal_free.data.corpora.common import CorpusError, check_shares
from unimodal_free.data.rewriting.seeded import draw
from unimodal_free.usage import ArgumentParser, usage_errors

DEFAULT_THEME = "/usr/share/icons/Adwaita"
VOICES = ("en", "en-us", "en-gb-scotland", "en+f3")  # espeak-ng voices shipped with espeak-ng-data


def caption_of(name: str) -> str:
    """"media-playback-start" -> "media playback start"."""
    return " ".join(name.replace("_", "-").split("-"))


LEGACY = "legacy"  # the theme's folder of old full-colour icons: a place, not a category


def find_icons(theme: Path, size: str) -> tuple[dict[str, Path], list[str], dict[str, str]]:
    """(full-colour icon name -> PNG, sorted names that exist only as "-symbolic" icons,
    every name -> its category: the context folder, that of the symbolic twin for a legacy icon)."""
    folder = theme / size
    if not folder.is_dir():
        raise CorpusError(f"--theme {theme}: no {size} folder (apt-get install adwaita-icon-theme, or pass --size)")
    colour = {p.stem: p for p in sorted(folder.rglob("*.png")) if "symbolic" not in p.name}
    if not colour:
        raise CorpusError(f"--theme {theme}: no full-colour PNG icon under {folder}")
    symbolic: dict[str, str] = {}  # name -> context folder of its symbolic icons (legacy only if no other)
    for p in sorted(theme.rglob("*-symbolic*")):
        name = p.name.split("-symbolic")[0]
        if symbolic.get(name, LEGACY) == LEGACY:
            symbolic[name] = p.parent.name
    category = dict(symbolic)
    for name, path in colour.items():
        if path.parent.name != LEGACY or symbolic.get(name, LEGACY) == LEGACY:
            category[name] = path.parent.name
    return colour, sorted(set(symbolic) - set(colour)), category


def speak(text: str, voice: str, out: Path) -> None:
    """Record ``text`` with espeak-ng into the WAV file ``out``."""
    try:
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    except FileNotFoundError:
        raise CorpusError("espeak-ng not found: apt-get install espeak-ng") from None
    except subprocess.CalledProcessError as e:
        raise CorpusError(f"espeak-ng -v {voice} failed: {e.stderr.decode(errors='replace').strip()}") from None


def build(out_dir, theme=DEFAULT_THEME, size: str = "48x48", speech: float = 0.08, text_only: float = 0.1,
          heldout: float = 0.15, seed: int = 0, limit: int | None = None) -> dict[str, dict[str, int]]:
    """Write the corpus folder; returns {split: {modality combination: samples}}."""
    check_shares(speech=speech, text_only=text_only, heldout=heldout)
    out, theme = Path(out_dir), Path(theme)
    icons, symbolic_only, category = find_icons(theme, size)
    names = sorted(icons)[:limit]
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "speech").mkdir(parents=True, exist_ok=True)
    spoken = {n for n in names if draw(n, seed, "speech") < speech}
    held = set()
    for group in (sorted(spoken), sorted(set(names) - spoken)):  # stratified: held-out speech in proportion
        held |= set(sorted(group, key=lambda n: draw(n, seed, "heldout"))[:round(heldout * len(group))])
    lines: dict[str, list[dict]] = {"train": [], "heldout": []}
    for name in names:
        split = "heldout" if name in held else "train"
        shutil.copyfile(icons[name], out / "images" / f"{name}.png")
        line = {"key": name, "image": f"images/{name}.png", "text": caption_of(name), "split": split,
                "label": {"category": category[name]}, "source": f"{theme.name} {icons[name].relative_to(theme)}"}
        if name in spoken:
            voice = VOICES[int(draw(name, seed, "voice") * len(VOICES))]
            speak(caption_of(name), voice, out / "speech" / f"{name}.wav")
            line.update(speech=f"speech/{name}.wav", voice=voice)
        lines[split].append(line)
    # Text-only lines: text_only of all samples, i.e. n / (1 - share) samples in all.
    wanted = round(len(names) * text_only / (1 - text_only))
    ranked = sorted(symbolic_only, key=lambda n: draw(n, seed, "text"))[:wanted]
    lines["train"] += [{"key": f"text-{name}", "text": caption_of(name), "split": "train",
                        "label": {"category": category[name]}, "source": f"{theme.name} symbolic icon name"}
                       for name in sorted(ranked)]
    counts = {}
    for split, rows in lines.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        kinds: dict[str, int] = {}
        for r in rows:
            kind = "+".join(m for m in ("image", "speech", "text") if m in r)
            kinds[kind] = kinds.get(kind, 0) + 1
        counts[split] = dict(sorted(kinds.items()))
    return counts


@usage_errors(CorpusError)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.data.corpora.icons", description=__doc__.split("\n")[0])
    ap.add_argument("output_dir")
    ap.add_argument("--theme", default=DEFAULT_THEME, help=f"icon theme folder (default {DEFAULT_THEME})")
    ap.add_argument("--size", default="48x48", help="size folder of the theme (default 48x48)")
    ap.add_argument("--speech", type=float, default=0.08, help="share of pictures with a spoken caption (0.08)")
    ap.add_argument("--text-only", type=float, default=0.1, help="share of text-only lines among all samples (0.1)")
    ap.add_argument("--heldout", type=float, default=0.15, help="share of pictures held out for retrieval (0.15)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N icons by name (a quick try)")
    args = ap.parse_args(argv)
    counts = build(args.output_dir, args.theme, args.size, args.speech, args.text_only, args.heldout,
                   args.seed, args.limit)
    for split, kinds in counts.items():
        print(f"{split}: {sum(kinds.values())} samples " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
