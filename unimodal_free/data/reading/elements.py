"""Decode one shard sample and turn each of its modalities into Elements.

This file is the only place that knows how an image, a waveform or a caption
becomes ``values (M, C)`` + ``coords (M, D)``; everything downstream
(batching, the model, the eval) sees Elements only.

Positions are *absolute* wherever lengths vary: a speech element's coord is its
centre time divided by ``max_speech_seconds`` and a token's coord its index
divided by ``max_text_tokens`` (both mapped to [-1, 1]). With per-utterance
normalisation the same coord would mean 0.1 s in a short clip and 0.6 s in a
long one, so position features would carry no physical meaning and two
utterances of the same words at different speeds/lengths would not line up.
Images are always resized/cropped to the full ``image_size`` square, so their
relative and absolute positions coincide.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from unimodal_free.batch import Elements, Row
from unimodal_free.data.reading import media
from unimodal_free.data.reading.image_augment import AugmentDraw, augment_pixels, draw_augment
from unimodal_free.data.reading.labels import LABELS_KEY, BadLabel, label_fields
from unimodal_free.modalities import (
    CAPTION_MODALITY,
    member_index,
    member_modality,
    HOP_SECONDS,
    MODALITIES,
    MODALITY,
    N_FFT_SECONDS,
    TABLE,
    WINDOW_SECONDS,
)

# Members the reader reads at all: every modality's extensions in the table (what the writer emits,
# media.IMAGE_EXTS/SPEECH_EXTS, plus common aliases) and the metadata; the rest of a tar (e.g.
# .cls/.npy extras) is skipped unread.
KNOWN_EXTS = tuple(ext for m in TABLE for ext in m.extensions) + ("json",)


def known_member(ext: str) -> bool:
    """A member the reader reads: a modality's file (indexed ones too, "3.flac") or the metadata."""
    return ext == "json" or member_modality(ext) is not None
# Metadata is a few fields; a larger .json is refused before json.loads expands it.
MAX_META_BYTES = 1 << 20


class DecodeError(ValueError):
    """A sample (or one of its files) cannot be turned into elements."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _centres(n: int, length: float) -> torch.Tensor:
    """Centres of ``n`` cells of a grid covering ``[0, length)`` cells, mapped to [-1, 1]."""
    return (torch.arange(n, dtype=torch.float32) + 0.5) / length * 2.0 - 1.0


# ---------------------------------------------------------------- image


def open_image(data: bytes, key: str = "?"):
    """Bytes -> the decoded PIL image as stored (any mode); bombs refused from the header."""
    try:
        return media.open_image(data)
    except media.BadMedia as exc:
        raise DecodeError(key, f"image: {exc}") from None


def upright_rgb(im):
    """Any PIL image -> RGB (alpha composited on white), turned upright by its EXIF orientation."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(media.to_rgb(im))


def decode_image(data: bytes, key: str = "?"):
    """Bytes -> RGB PIL image, upright (EXIF), alpha composited on white; bombs refused from the header."""
    return upright_rgb(open_image(data, key))


def image_pixels(im, image_size: int) -> torch.Tensor:
    """RGB image -> resize shorter side, centre crop: float pixels (H, W, 3) in [0, 255]."""
    from PIL import Image

    w, h = im.size
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    im = im.crop((left, top, left + image_size, top + image_size))
    return torch.from_numpy(np.asarray(im, dtype=np.float32).copy())  # (H, W, 3) in [0, 255]


def image_elements(im, image_size: int, patch_size: int, augment: Optional[AugmentDraw] = None,
                   stride: Optional[int] = None) -> Elements:
    """RGB image -> resize shorter side, centre crop, (augment: training only), scale to [-1, 1], cut into
    p x p patches, one per cell of an (image_size / stride)^2 grid, centred on it.

    ``stride`` (``data.patch_stride``) None or p: non-overlapping patches. Smaller: overlapping windows, so
    an outline cut by one patch's edge is whole in a neighbour's (mid-grey, 0, beyond the picture's edge).
    """
    x = image_pixels(im, image_size)  # (H, W, 3) in [0, 255]
    if augment is not None:
        x = augment_pixels(x, augment)
    x = x / 127.5 - 1.0
    p, s = patch_size, stride or patch_size
    g = image_size // s
    margin = (p - s) // 2  # 0 for non-overlapping patches
    x = F.pad(x.permute(2, 0, 1), (margin,) * 4)  # (3, H + 2 margin, W + 2 margin)
    x = x.unfold(1, p, s).unfold(2, p, s).permute(1, 2, 3, 4, 0)  # (gh, gw, p, p, 3)
    values = x.reshape(g * g, p * p * 3)  # (M, p*p*3), patches in row-major order
    c = _centres(g, g)
    yy, xx = torch.meshgrid(c, c, indexing="ij")  # (gh, gw) each
    coords = torch.stack([yy, xx], dim=-1).reshape(g * g, 2)  # (M, 2) as (y, x)
    return Elements("image", values, coords)


# ---------------------------------------------------------------- speech


def decode_speech(data: bytes, sample_rate: int, key: str = "?", max_seconds: float | None = None) -> torch.Tensor:
    """Bytes (flac/wav/ogg) -> mono float32 waveform at ``sample_rate``, shape (T,).

    ``max_seconds``: only that much (+ a resampling margin) is decoded and resampled.
    """
    return waveform_at(*read_speech(data, key, max_seconds), sample_rate, max_seconds)


def read_speech(data: bytes, key: str = "?", max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Bytes (flac/wav/ogg) -> (mono float32 waveform (T,) at the file's own rate, that rate)."""
    try:
        wave, sr, _ = media.read_audio(data, max_seconds)  # (T,) mono
    except media.BadMedia as exc:
        raise DecodeError(key, f"speech: {exc}") from None
    return wave, sr


def waveform_at(wave: np.ndarray, sr: int, sample_rate: int, max_seconds: float | None = None) -> torch.Tensor:
    """Mono float32 waveform (T,) at ``sr`` -> (T',) at ``sample_rate``.

    ``max_seconds``: only the first ``max_seconds`` (+ the resampling margin) are resampled, the same
    cut :func:`media.read_audio` makes while decoding, so a decoded file and its waveform agree.
    """
    if max_seconds is not None:
        wave = wave[: int((max_seconds + media.RESAMPLE_MARGIN_SECONDS) * sr)]
    return torch.from_numpy(media.resample(wave, sr, sample_rate).copy())  # (T',)


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int, n_mels: int):
    """One MelSpectrogram per (rate, bins): its filterbank and window are built once, not per clip."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=round(N_FFT_SECONDS * sample_rate), win_length=round(WINDOW_SECONDS * sample_rate),
        hop_length=round(HOP_SECONDS * sample_rate), n_mels=n_mels, center=False, power=2.0,
    )


def speech_elements(
    wave: torch.Tensor, sample_rate: int, n_mels: int, frames_per_element: int, max_seconds: float, key: str = "?"
) -> Elements:
    """Mono waveform -> per-utterance normalised log-mel frames, ``s`` stacked per element."""
    wave = wave[: int(max_seconds * sample_rate)]
    if wave.numel() < N_FFT_SECONDS * sample_rate:
        raise DecodeError(key, f"speech: {wave.numel() / sample_rate:.3f} s is shorter than one analysis window")
    feats = (_mel(sample_rate, n_mels)(wave) + 1e-6).log().T  # (F, n_mels), one frame per 10 ms
    # Per-utterance CMVN. The std floor (log units) keeps a near-constant bin (pure tone, digital
    # silence) from having its float noise blown up to unit variance.
    feats = (feats - feats.mean(0)) / feats.std(0, unbiased=False).clamp_min(1e-2)
    s = frames_per_element
    m = feats.shape[0] // s  # the < s trailing frames (< s*10 ms) are dropped
    if m == 0:
        raise DecodeError(key, f"speech: {feats.shape[0]} frames, fewer than frames_per_element={s}")
    values = feats[: m * s].reshape(m, s * n_mels)  # (M, s*n_mels), frame-major
    # Element i covers frames [i*s, (i+1)*s): centre time (i + 0.5) * s * 10 ms, over the max duration.
    coords = ((torch.arange(m, dtype=torch.float32) + 0.5) * s * HOP_SECONDS / max_seconds * 2.0 - 1.0).clamp(-1.0, 1.0)
    return Elements("speech", values.float().contiguous(), coords[:, None])  # coords (M, 1)


# ---------------------------------------------------------------- text


# A line as str.splitlines() sees one, from its first non-space character on; blank lines never match.
_LINE = re.compile(r"\S[^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]*")


def decode_captions(data: bytes, key: str = "?", max_lines: int | None = None) -> list[str]:
    """UTF-8 bytes -> non-empty stripped lines (one caption per line), the first ``max_lines`` only.

    Lines are found lazily, so a member of a million lines costs ``max_lines`` strings, not a million.
    """
    try:
        text = media.decode_text(data)
    except media.BadMedia as exc:
        raise DecodeError(key, f"text: {exc}") from None
    lines = list(itertools.islice((m.group().rstrip() for m in _LINE.finditer(text)), max_lines))
    if not lines:  # only with max_lines=0 (decode_text refuses blank text)
        raise DecodeError(key, f"text: no caption kept (max_lines={max_lines})")
    return lines


def text_elements(text: str, tokenizer, max_tokens: int, key: str = "?", max_chars: int | None = None) -> Elements:
    """Caption -> token ids (M,) int64, truncated to ``max_tokens``, 1-D absolute coords.

    ``max_chars`` cuts the caption before tokenizing (a tokenizer's cost grows with its input).
    """
    ids = tokenizer.encode(text.strip()[:max_chars].strip())[:max_tokens]
    if not ids:
        raise DecodeError(key, "text: no tokens")
    values = torch.tensor(ids, dtype=torch.long)  # (M,)
    coords = _centres(len(ids), max_tokens)[:, None]  # (M, 1)
    return Elements("text", values, coords)


# ---------------------------------------------------------------- settings


def preprocessing(data_cfg) -> dict[str, Any]:
    """The ``data.*`` settings that decide what the model sees of an input (a model folder records them)."""
    d = data_cfg
    return {
        "image_size": d.image_size, "patch_size": d.patch_size, "patch_stride": d.image_stride,
        "image_resize": "shorter side, bicubic, centre crop",
        "image_scale": "[0, 255] -> [-1, 1]", "sample_rate": d.sample_rate, "n_mels": d.n_mels,
        "frames_per_element": d.frames_per_element, "max_speech_seconds": d.max_speech_seconds,
        "max_text_tokens": d.max_text_tokens, "max_caption_chars": d.max_caption_chars,
    }


# ---------------------------------------------------------------- one sample


def _find(sample: dict[str, Any], exts: tuple[str, ...]) -> Optional[tuple[str, bytes]]:
    for ext in exts:
        if ext in sample:
            return ext, sample[ext]
    return None


def member_exts(sample: dict[str, Any], modality: str) -> list[str]:
    """The extensions of every file of ``modality`` in a raw sample: the plain one, else the indexed ones
    ("0.flac", ...) in index order; the order of the sample's rows of that modality."""
    plain = _find(sample, MODALITY[modality].extensions)
    if plain is not None:
        return [plain[0]]
    indexed = [ext for ext in sample if not ext.startswith("__") and "." in ext and member_modality(ext) == modality]
    return sorted(indexed, key=member_index)


def members(sample: dict[str, Any], modality: str) -> list[bytes]:
    """Every file of ``modality`` in a raw sample, in :func:`member_exts` order."""
    return [sample[ext] for ext in member_exts(sample, modality)]


def sample_modalities(sample: dict[str, Any]) -> list[str]:
    """Modalities a raw sample holds files for, in MODALITIES order."""
    return [m.name for m in TABLE if members(sample, m.name)]


@dataclass
class RawSample:
    """What a modality's decoder reads of one raw sample."""

    files: dict[str, Any]  # the webdataset sample: extension -> bytes
    meta: dict[str, Any]  # its parsed .json ({} without one)
    where: str  # "url:key" for error messages
    data_cfg: Any  # cfg.data
    tokenizer: Any
    train: bool
    rng: Optional[random.Random]
    # Draws the training pictures' augmentation (data.image_augment), apart from ``rng`` so that turning it on
    # changes the pixels only, never which caption or recording a step gets.
    augment_rng: Optional[random.Random] = None
    # (how many, which) of the caption drawn in training: a sample's recordings, when there are as many
    # (the five captions of a picture and their five recordings), use the same draw, so the recording
    # and the caption of a step are one utterance and its words.
    drawn: Optional[tuple[int, int]] = None

    def member(self, modality: str) -> bytes:
        return members(self.files, modality)[0]

    def draw(self, n: int) -> int:
        """Index of the one item of ``n`` that training keeps (the caption's index again when counts match)."""
        if self.drawn is not None and self.drawn[0] == n:
            return self.drawn[1]
        self.drawn = (n, self.rng.randrange(n))  # randrange(n) draws what rng.choice over n items draws
        return self.drawn[1]


def _image(s: RawSample) -> list[Elements]:
    im = decode_image(s.member("image"), s.where)
    augment = s.data_cfg.image_augment
    draw = draw_augment(augment, s.augment_rng) if s.train and augment.enabled else None
    return [image_elements(im, s.data_cfg.image_size, s.data_cfg.patch_size, draw, s.data_cfg.image_stride)]


def _speech(s: RawSample) -> list[Elements]:
    """One row per recording (several: "0.flac", "1.flac", ...); training keeps one (see ``RawSample.draw``)."""
    d = s.data_cfg
    recordings = members(s.files, "speech")
    if s.train and len(recordings) > 1:
        recordings = [recordings[s.draw(len(recordings))]]
    return [speech_elements(decode_speech(data, d.sample_rate, s.where, d.max_speech_seconds), d.sample_rate,
                            d.n_mels, d.frames_per_element, d.max_speech_seconds, s.where) for data in recordings]


def sample_captions(files: dict[str, Any], meta: dict[str, Any], where: str, max_lines: int) -> list[str]:
    """A sample's captions as eval reads them (json ``captions``, else the .txt lines), the first ``max_lines``;
    the order of its text rows."""
    captions = meta.get("captions")
    if captions is None:
        return decode_captions(members(files, "text")[0], where, max_lines)
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DecodeError(where, "json: captions must be a list of strings")
    captions = [c.strip() for c in captions if c.strip()][:max_lines]
    if not captions:
        raise DecodeError(where, "text: empty captions list")
    return captions


def _text(s: RawSample) -> list[Elements]:
    """One row per caption (a line of the .txt, or json ``captions``); training keeps one, drawn by ``rng``."""
    d = s.data_cfg
    captions = sample_captions(s.files, s.meta, s.where, d.max_caption_lines)
    if s.train:
        captions = [captions[0] if len(captions) == 1 else captions[s.draw(len(captions))]]
    return [text_elements(c, s.tokenizer, d.max_text_tokens, s.where, d.max_caption_chars) for c in captions]


# The decoder column of the modality table (decoding needs PIL/torchaudio, so it lives here, with the data).
DECODERS: dict[str, Callable[[RawSample], list[Elements]]] = {"image": _image, "speech": _speech, "text": _text}


def read_meta(sample: dict[str, Any], where: str) -> dict[str, Any]:
    """The sample's .json as a dict ({} without one); DecodeError when too large or not an object."""
    if "json" not in sample:
        return {}
    if len(sample["json"]) > MAX_META_BYTES:
        raise DecodeError(where, f"json: {len(sample['json'])} bytes (limit {MAX_META_BYTES})")
    try:
        meta = json.loads(sample["json"].decode("utf-8"))
    except Exception as exc:
        raise DecodeError(where, f"json: invalid ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise DecodeError(where, "json: top level is not an object")
    return meta


def sample_labels(meta: dict[str, Any], where: str, train: bool) -> dict[str, str]:
    """The json's ``labels`` as {field: value} strings ({} without any).

    Malformed labels make the sample a DecodeError for eval (a probe must not score it unlabelled);
    training reads them as none, so labels never change which samples a run trains on.
    """
    try:
        return label_fields(meta.get(LABELS_KEY))
    except BadLabel as exc:
        if train:
            return {}
        raise DecodeError(where, f"json: labels: {exc}") from None


def sample_rows(
    sample: dict[str, Any], data_cfg, tokenizer, train: bool, rng: Optional[random.Random] = None,
    augment_rng: Optional[random.Random] = None,
) -> list[Row]:
    """One raw webdataset sample -> rows ``(Elements, key, pair_id, labels)``, one per modality.

    Training picks one caption per sample with ``rng`` (several lines in the
    .txt or json ``captions``); eval keeps every caption as its own row with the
    same pair id (COCO protocol). With ``data_cfg.split_pairs`` off, training
    keeps one modality of a paired sample (chosen by ``rng``) and no pair id.
    Training with ``data_cfg.image_augment.enabled`` augments the picture with
    ``augment_rng``; eval never does.
    Raises :class:`DecodeError` on anything undecodable.
    """
    key = sample.get("__key__", "?")
    url = sample.get("__url__")
    where = f"{url}:{key}" if url else key
    meta = read_meta(sample, where)
    present = sample_modalities(sample)
    if "captions" in meta and CAPTION_MODALITY not in present:
        present.append(CAPTION_MODALITY)  # captions carried in the json (COCO-style) count as the text file
    declared = meta.get("modalities")
    if declared is not None:
        if not isinstance(declared, list) or not all(isinstance(m, str) for m in declared):
            raise DecodeError(where, f"json: modalities must be a list of names, got {declared!r}")
        missing = [m for m in declared if m not in present]
        if missing:
            raise DecodeError(where, f"json declares {declared} but the sample has no {'/'.join(missing)} file")
    if not present:
        raise DecodeError(where, f"no {'/'.join(MODALITIES)} file in sample")
    labels = sample_labels(meta, where, train)  # every row of the sample carries them (a probe reads any modality)
    if "pair" in meta:  # an explicit null is "no partner", not the pair id "None" shared by every such sample
        pair = None if meta["pair"] is None else str(meta["pair"])
    else:
        pair = key if len(present) > 1 else None

    if train and rng is None:
        raise ValueError("sample_rows: training needs an rng (caption choice, split_pairs=False)")
    if train and data_cfg.image_augment.enabled and augment_rng is None:
        raise ValueError("sample_rows: data.image_augment.enabled needs an augment_rng in training")
    if train and not data_cfg.split_pairs and len(present) > 1:
        present, pair = [rng.choice(present)], None

    # Cheapest first (the table's decode_rank: text, image, speech): a sample that fails on its text
    # fails before the costly decodes, so a source that decodes nothing reaches data.max_skips_in_row quickly.
    raw = RawSample(sample, meta, where, data_cfg, tokenizer, train, rng, augment_rng if train else None)
    rows: dict[str, list[Row]] = {}
    for modality in sorted(present, key=lambda m: MODALITY[m].decode_rank):
        rows[modality] = [Row(e, key, pair, labels) for e in DECODERS[modality](raw)]
    return [row for modality in present for row in rows[modality]]  # in MODALITIES order
