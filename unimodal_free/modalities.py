"""The modality table: what each modality is, in one place, read by data, masking, eval and config.

Adding a modality is one row here, its masking keys in ``config.sections.MaskingConfig``,
and its decoder in ``data/elements.DECODERS`` (decoding needs PIL/torchaudio and lives with
the data). Everything else (batch order, coordinate dims, element widths, file suffixes,
mask parameters, the order samples are decoded in, which rows get a thumbnail or a caption
label in the eval) is read from the rows, not from names.

This module imports nothing of the package: it sits below ``config``, ``batch`` and ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

# Log-mel analysis of speech (data/reading/elements.py computes it, config validation checks
# data.n_mels and data.max_speech_seconds against it): a 25 ms Hann window in a 32 ms FFT
# (512 at 16 kHz), 10 ms hop, no centre padding.
WINDOW_SECONDS, HOP_SECONDS, N_FFT_SECONDS = 0.025, 0.010, 0.032


@dataclass(frozen=True)
class MaskKeys:
    """The ``masking.*`` keys that hold one modality's mask parameters, and their defaults."""

    ratio: str  # share of real elements masked
    block: str  # block side (image) or span length (speech, text) in elements per axis
    inverse: Optional[str]  # key of "blocks are kept, not masked"; None: never inverse
    ratio_default: float
    block_default: int
    inverse_default: bool = False


@dataclass(frozen=True)
class Modality:
    """One row of the table."""

    name: str
    extensions: tuple[str, ...]  # tar member / file suffixes the reader and the query CLI take, preferred first
    coord_dims: int  # positional dimensions of an element's coords
    # What an element's values are: "patches" (RGB pixels of a p x p patch), "log_mel" (stacked log-mel
    # frames) or "tokens" (token ids of a caption, embedded by lookup). The eval draws a thumbnail of
    # patches and log-mel rows and labels points with the caption of token rows.
    values: str
    # Continuous values per element from the data config (``cfg.data``); None for tokens (their
    # width is the tokenizer's vocabulary).
    value_width: Optional[Callable[[Any], int]]
    masking: MaskKeys
    decode_rank: int  # samples decode cheapest first: a sample failing on a cheap member skips the costly ones

    @property
    def tokens(self) -> bool:
        """Values are token ids (a caption), not continuous features."""
        return self.values == "tokens"


TABLE: tuple[Modality, ...] = (
    Modality("image", ("jpg", "jpeg", "png", "webp"), coord_dims=2, values="patches",
             value_width=lambda data: data.patch_size * data.patch_size * 3,
             masking=MaskKeys("image_ratio", "image_block", "image_inverse_block", 0.8, 3, True),
             decode_rank=1),
    Modality("speech", ("flac", "wav", "ogg"), coord_dims=1, values="log_mel",
             value_width=lambda data: data.n_mels * data.frames_per_element,
             masking=MaskKeys("speech_ratio", "speech_span", None, 0.5, 5),
             decode_rank=2),
    Modality("text", ("txt",), coord_dims=1, values="tokens", value_width=None,
             masking=MaskKeys("text_ratio", "text_span", None, 0.48, 1),
             decode_rank=0),
)

MODALITY: dict[str, Modality] = {m.name: m for m in TABLE}
# The canonical order: batches, logs, metric names and model.modalities follow it.
MODALITIES: tuple[str, ...] = tuple(MODALITY)
# File suffix (lower case, no dot) -> modality name.
SUFFIX_MODALITY: dict[str, str] = {ext: m.name for m in TABLE for ext in m.extensions}
# The one modality whose rows are captions (token ids): the eval labels points with them.
CAPTION_MODALITY: str = next(m.name for m in TABLE if m.tokens)

# Modalities a sample may hold several members of (five recordings of one picture's captions): they are
# stored as "0.flac", "1.flac", ... (an index, a dot, the modality's extension), a single one as "flac".
SEVERAL: tuple[str, ...] = ("speech",)
MAX_MEMBERS = 100  # indexes 0..99: a sample is a picture's captions, not a corpus


def member_modality(ext: str) -> Optional[str]:
    """The modality of a tar member suffix ("flac", or "3.flac" for a modality in SEVERAL), or None."""
    if ext in SUFFIX_MODALITY:
        return SUFFIX_MODALITY[ext]
    index, dot, base = ext.partition(".")
    if dot and index.isdigit() and index.isascii() and str(int(index)) == index and int(index) < MAX_MEMBERS:
        modality = SUFFIX_MODALITY.get(base)
        return modality if modality in SEVERAL else None
    return None


def member_index(ext: str) -> int:
    """The index of an indexed member ("3.flac" -> 3); 0 for a plain one ("flac")."""
    index, dot, _ = ext.partition(".")
    return int(index) if dot else 0
