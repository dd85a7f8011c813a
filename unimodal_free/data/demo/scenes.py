"""The demo's scenes: one coloured shape on a muted background, from a small caption grammar.

Every random choice of a sample (shape, voice, formats, which modalities it
carries) is drawn up front by :func:`plan`, so drawing and speaking them in any
order gives the same bytes. Held-out scenes use attribute combinations never
seen in training.
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import asdict, dataclass

# Radius as a fraction of the image side.
SIZES = {"small": 0.09, "medium": 0.14, "large": 0.20}
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (35, 70, 225), "yellow": (245, 220, 30),
    "purple": (140, 45, 175), "orange": (245, 140, 20), "white": (255, 255, 255), "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")
# Position phrase -> centre as a fraction of the image side (x, y).
POSITIONS = {
    "at the top left": (0.25, 0.25), "at the top": (0.5, 0.25), "at the top right": (0.75, 0.25),
    "on the left": (0.25, 0.5), "in the center": (0.5, 0.5), "on the right": (0.75, 0.5),
    "at the bottom left": (0.25, 0.75), "at the bottom": (0.5, 0.75), "at the bottom right": (0.75, 0.75),
}
TEMPLATES = (
    "a {size} {colour} {shape} {where}",
    "there is a {size} {colour} {shape} {where}",
    "{where} there is a {size} {colour} {shape}",
)
# espeak-ng voices that ship with Debian's espeak-ng-data (no MBROLA), with variants for timbre.
VOICES = ("en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp", "en+f3", "en-us+f2", "en+m3", "en+f4", "en-us+m5")
SPEEDS = (130, 150, 170, 190)  # words per minute
PITCHES = (35, 50, 65)

ALL = ("image", "speech", "text")


@dataclass(frozen=True)
class Mix:
    """Shares of samples per modality combination (each split alike); the rest are image + text pairs."""

    speech: float = 1.0  # image + speech + text
    text_only: float = 0.0
    image_only: float = 0.0

    def check(self) -> "Mix":
        for name, share in asdict(self).items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"demo mix: --{name.replace('_', '-')} must be a share in [0, 1], got {share}")
        if self.speech + self.text_only + self.image_only > 1.0 + 1e-9:
            raise ValueError(f"demo mix: --speech {self.speech} + --text-only {self.text_only} + "
                             f"--image-only {self.image_only} exceeds 1 (speech goes on image + text pairs)")
        return self

    def combinations(self, n: int, seed: int, split: str) -> list[tuple[str, ...]]:
        """The modalities of each of ``n`` samples: exact counts, positions from a seeded shuffle."""
        kinds = ((("text",), self.text_only), (("image",), self.image_only), (ALL, self.speech))
        out, done, cum = [], 0, 0.0
        for kind, share in kinds:
            cum += share
            upto = min(n, round(n * cum))  # cumulative rounding: the counts add up to at most n
            out += [kind] * (upto - done)
            done = upto
        out += [("image", "text")] * (n - done)
        random.Random(f"demo-mix-{seed}-{split}").shuffle(out)
        return out


BALANCED = Mix()


@dataclass(frozen=True)
class Scene:
    """Every random choice of one sample, drawn up front so generation order cannot change it."""

    key: str
    split: str
    size: str
    colour: str
    shape: str
    where: str
    template: int
    dx: float  # centre jitter, fraction of the side
    dy: float
    rotation: float  # degrees
    background: tuple  # two RGB end points of a gradient
    gradient_angle: float
    background_alpha: int  # 255 = opaque RGB image, < 255 = RGBA PNG with a translucent background
    image_format: str  # "png" | "jpg"
    voice: str
    speed: int
    pitch: int
    audio_format: str  # "flac" | "ogg" | "wav"
    noise_seed: int
    modalities: tuple = ALL  # what the written sample carries

    @property
    def caption(self) -> str:
        return TEMPLATES[self.template].format(size=self.size, colour=self.colour, shape=self.shape,
                                               where=self.where)


def _muted(rng: random.Random) -> tuple:
    r, g, b = colorsys.hls_to_rgb(rng.random(), rng.uniform(0.35, 0.6), rng.uniform(0.05, 0.3))
    return int(r * 255), int(g * 255), int(b * 255)


def plan(n_train: int, n_heldout: int, seed: int = 0, mix: Mix = BALANCED) -> list[Scene]:
    """Train scenes, then held-out scenes; held-out attribute combinations never occur in train."""
    mix.check()
    rng = random.Random(seed)
    combos = [(s, c, sh, w) for s in SIZES for c in COLOURS for sh in SHAPES for w in POSITIONS]
    rng.shuffle(combos)
    if not 0 < n_heldout <= len(combos) // 2 or n_train < 1:
        raise ValueError(f"demo counts: need train >= 1 and 1 <= heldout <= {len(combos) // 2}, "
                         f"got train={n_train} heldout={n_heldout}")
    held, train = combos[:n_heldout], combos[n_heldout:]
    scenes = []
    for split, n, pool in (("train", n_train, train), ("heldout", n_heldout, held)):
        kinds = mix.combinations(n, seed, split)
        for i in range(n):
            size, colour, shape, where = pool[i % len(pool)]
            scenes.append(Scene(
                key=f"demo-{split}-{i:06d}", split=split, size=size, colour=colour, shape=shape, where=where,
                template=rng.randrange(len(TEMPLATES)), dx=rng.uniform(-0.04, 0.04), dy=rng.uniform(-0.04, 0.04),
                rotation=rng.uniform(-12, 12), background=(_muted(rng), _muted(rng)),
                gradient_angle=rng.uniform(0, 2 * math.pi),
                background_alpha=rng.randrange(96, 200) if i % 5 == 1 else 255,
                image_format="jpg" if i % 10 == 4 else "png",
                voice=rng.choice(VOICES), speed=rng.choice(SPEEDS), pitch=rng.choice(PITCHES),
                audio_format={3: "ogg", 7: "wav"}.get(i % 10, "flac"), noise_seed=rng.randrange(2**31),
                modalities=kinds[i],
            ))
    return scenes


class DemoDataError(RuntimeError):
    """The demo data cannot be made here (no espeak-ng, a foreign folder in the way): a one-line user error."""
