"""A trained model as an embedder: captions, files, PIL images, image tensors and waveforms in, embeddings out.

    import unimodal_free
    embedder = unimodal_free.load("runs/joint/model")   # a model folder, run dir, checkpoint or export file
    z = embedder.embed(["a dog on a green field", Path("dog.jpg"), pil_image, (waveform, 16000)])  # (4, D)
    z[0] @ z[1:].T                                       # cosine similarities (rows are L2-normalised)

Every input kind has one route to the model, and the file route runs through
it: an image file is decoded to a PIL image and goes the PIL route, an audio
file is decoded to (waveform, its sample rate) and goes the waveform route,
an image tensor becomes the PIL image of its pixels. Those routes are the
shard decoder's own functions (``data/reading/elements.py``), so a file embeds here
exactly as the same sample does inside the retrieval eval.
:meth:`Embedder.preprocess` returns the rows the model sees.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from PIL import Image

from unimodal_free.batch import Elements, collate_elements
from unimodal_free.bounded_read import BoundedReadError, read_bounded
from unimodal_free.data.reading import media
from unimodal_free.data.reading.elements import (
    DecodeError,
    decode_captions,
    image_elements,
    open_image,
    preprocessing,
    read_speech,
    speech_elements,
    text_elements,
    upright_rgb,
    waveform_at,
)
from unimodal_free.model import pooled_embedding
from unimodal_free.model.joint import unwrap
from unimodal_free.modalities import SUFFIX_MODALITY
from unimodal_free.model.pooling import embedding_dim
from unimodal_free.store.rebuild import EvalError, load_model, resolve_tokenizer
from unimodal_free.store.weights import load_weights, run_model_folder

IMAGE_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}  # (C, H, W) tensors: channels -> PIL mode
# A .txt file is one row per line, kept in memory with its embeddings (and, in the query CLI, an n x n table):
# a caption file, not a corpus. A corpus goes in as strings, in batches of the caller's choosing.
MAX_CAPTION_FILE_BYTES = 4 << 20
MAX_CAPTION_FILE_LINES = 1024
INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}  # PCM as soundfile reads it as float


MAX_FLAGGED_SHOWN = 5  # captions a warning about unseen words names; the rest are counted


@dataclass(frozen=True)
class Item:
    """A caption, or a file named by its path (the query CLI's inputs): ``embed`` takes these too."""

    source: str  # the caption, or the file path
    is_file: bool
    origin: str = ""  # where a caption came from ("captions.txt:3"); "" for --text

    @property
    def label(self) -> str:
        if self.is_file:
            return self.source
        return f"{self.origin} {self.source!r}" if self.origin else repr(self.source)


def file_modality(path: str | os.PathLike) -> str:
    """image/speech/text by the file's suffix; EvalError naming the file when unknown."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in SUFFIX_MODALITY:
        raise EvalError(f"{path}: unknown suffix {suffix!r} (known: {sorted(SUFFIX_MODALITY)})")
    return SUFFIX_MODALITY[suffix]


def read_caption_file(path: str | os.PathLike, label: str) -> list[str]:
    """The non-empty lines of a .txt file, one caption each; EvalError (one line naming the file and the
    limit) for a fifo, a device, a file over MAX_CAPTION_FILE_BYTES or one of more than MAX_CAPTION_FILE_LINES."""
    try:
        data = read_bounded(path, MAX_CAPTION_FILE_BYTES, "caption files")
        captions = decode_captions(data, label, MAX_CAPTION_FILE_LINES + 1)  # lines found lazily: no more are made
    except BoundedReadError as exc:
        raise EvalError(str(exc)) from None
    except DecodeError as exc:
        raise EvalError(f"{label}: {exc.reason}") from None
    if len(captions) > MAX_CAPTION_FILE_LINES:
        raise EvalError(f"{label}: more than {MAX_CAPTION_FILE_LINES} captions, the limit of a caption file "
                        "(embed a longer list as strings: embed_texts)")
    return captions


def _is_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def modality_of(x: Any) -> str:
    """Which modality an input of :meth:`Embedder.embed` is (files by suffix)."""
    if isinstance(x, Item):
        return file_modality(x.source) if x.is_file else "text"
    if isinstance(x, str):
        return "text"
    if isinstance(x, os.PathLike):
        return file_modality(x)
    if isinstance(x, tuple):
        return "speech"
    return "image"  # PIL images and (C, H, W) arrays; anything else is refused in describe()


def describe(x: Any, index: int) -> str:
    """A short name of input ``index`` for error messages; refuses what ``embed`` does not take."""
    if isinstance(x, Item):
        return x.label
    if isinstance(x, str):
        return repr(x) if len(x) <= 40 else repr(x[:37] + "...")
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, Image.Image):
        return f"input {index} (PIL image {x.size[0]}x{x.size[1]} {x.mode})"
    if _is_array(x):
        return f"input {index} (image array {tuple(x.shape)} {x.dtype})"
    if isinstance(x, tuple) and len(x) == 2 and _is_array(x[0]):
        return f"input {index} (waveform {tuple(x[0].shape)} at {x[1]} Hz)"
    raise EvalError(
        f"input {index}: {type(x).__name__} is not something to embed (a caption str, a file Path, a PIL image, "
        f"a (C, H, W) image tensor or a (waveform, sample_rate) pair)"
    )


def image_from_array(x: Any, label: str):
    """(C, H, W) uint8 or float in [0, 1] (C = 1, 3 or 4), torch or numpy -> the PIL image of those pixels.

    Floats are rounded to 8 bits (the shards' images are 8-bit too), so ``to_tensor(pil)`` maps back to ``pil``.
    """
    arr = _numpy(x)
    if arr.ndim != 3 or arr.shape[0] not in IMAGE_CHANNELS:
        hint = ": pass x.permute(2, 0, 1)" if arr.ndim == 3 and arr.shape[-1] in IMAGE_CHANNELS else ""
        raise EvalError(f"{label}: an image array must be (C, H, W) with C in {sorted(IMAGE_CHANNELS)}{hint}")
    if arr.dtype == np.uint8:
        pixels = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise EvalError(f"{label}: a float image must hold values in [0, 1], got [{arr.min():g}, {arr.max():g}] "
                            "(undo any mean/std normalisation)")
        pixels = np.rint(arr.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        raise EvalError(f"{label}: image dtype {arr.dtype} (uint8 or float in [0, 1])")
    hwc = np.ascontiguousarray(pixels.transpose(1, 2, 0))  # (H, W, C)
    return Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc, mode=IMAGE_CHANNELS[hwc.shape[2]])


def mono_waveform(wave: Any, sample_rate: Any, label: str) -> tuple[np.ndarray, int]:
    """(T,) or (C, T) float (or int16/int32 PCM), torch or numpy -> (mono float32 (T,), rate), checked."""
    arr = _numpy(wave)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise EvalError(f"{label}: sample rate must be an int (Hz), got {sample_rate!r}")
    if not 1000 <= sample_rate <= media.MAX_SAMPLE_RATE:
        raise EvalError(f"{label}: sample rate {sample_rate} Hz is implausible (1000..{media.MAX_SAMPLE_RATE})")
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and not 1 <= arr.shape[0] <= media.MAX_CHANNELS):
        raise EvalError(f"{label}: a waveform must be (T,) or (C, T) with C <= {media.MAX_CHANNELS}")
    if arr.dtype in INT_SCALE:
        arr = arr / INT_SCALE[arr.dtype]
    elif not np.issubdtype(arr.dtype, np.floating):
        raise EvalError(f"{label}: waveform dtype {arr.dtype} (float, int16 or int32)")
    channels_last = arr.astype(np.float32).T if arr.ndim == 2 else arr.astype(np.float32)[:, None]  # (T, C)
    if channels_last.shape[0] == 0:
        raise EvalError(f"{label}: waveform has no samples")
    try:
        return media.to_mono(channels_last), int(sample_rate)  # (T, C) -> (T,): the file decoder's own downmix
    except media.BadMedia as exc:
        raise EvalError(f"{label}: speech: {exc}") from None


class Embedder:
    """A trained model (teacher by default) with its config and tokenizer: inputs in, embeddings out."""

    def __init__(self, model: torch.nn.Module, cfg, tokenizer, device: torch.device | str = "cpu",
                 step: int = 0, which: str = "teacher", source: str = "", embed_fn: Optional[Callable] = None):
        """``embed_fn(model, batch) -> {m: (rows, D)}``: which features ``embed`` returns (default: the
        alignment head's, what retrieval compares; the probes pass theirs)."""
        self.model = model.to(device).eval()
        self.embed_fn = embed_fn or pooled_embedding
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.step, self.which, self.source = step, which, source

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None, model: Optional[str] = "teacher",
             tokenizer: Optional[str] = None) -> "Embedder":
        """A model folder, a run directory (the teacher: its model folder ``model/`` when that is as new as its
        latest complete checkpoint; else that checkpoint, else its final export), a checkpoint directory or a
        ``model.safetensors``; reads safetensors only, never a pickle.

        ``model``: "teacher" or "student" (None: the run's ``eval.model``). ``tokenizer``: a path to a copy of the
        tokenizer, for an old export that names it by an absolute path that is gone. ``device``: default cuda if
        available, else cpu.
        """
        path = os.fspath(path)
        folder = run_model_folder(path) if model != "student" else None  # the teacher, with the tokenizer beside it
        weights = load_weights(folder if folder is not None else path)
        if folder is not None and (model or weights.cfg.eval.model) == "teacher":
            path = os.fspath(folder)
        elif folder is not None:  # the run's eval.model is its student: only the run's own files hold it
            weights = load_weights(path)
        which = model or weights.cfg.eval.model
        tok = resolve_tokenizer(weights.tokenizer_ref, tokenizer, path, weights.cfg.data.demo_dir)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(load_model(weights, which, tok.vocab_size, path), weights.cfg, tok, device,
                   int(weights.step or 0), which, weights.source or path)

    # ------------------------------------------------------------ what the model sees
    @property
    def preprocessing(self) -> dict[str, Any]:
        """The settings every input is prepared with (the run's ``data.*``)."""
        return {**preprocessing(self.cfg.data), "tokenizer": self.tokenizer.reference}

    @property
    def embedding_dim(self) -> int:
        """D: the alignment projection's width when the run trained one, else the latents' width."""
        return embedding_dim(self.cfg.model, self.cfg.objective)

    @property
    def modalities(self) -> list[str]:
        return list(unwrap(self.model).modalities)

    def preprocess(self, item: Any, index: int = 0) -> list[Elements]:
        """The model-ready rows of one input: one for a caption, image or clip, one per line of a .txt file.

        An image row is its p x p patches scaled to [-1, 1] (M, p*p*3) with patch centres as coords; a speech
        row is normalised log-mel frames stacked ``frames_per_element`` per element; a caption is token ids.
        """
        label = describe(item, index)
        try:
            return self._rows(item, label)
        except DecodeError as exc:  # its key is our label: say it once
            raise EvalError(f"{label}: {exc.reason}") from None

    def _rows(self, item: Any, label: str) -> list[Elements]:
        d = self.cfg.data
        if isinstance(item, Item):
            item = Path(item.source) if item.is_file else item.source
        if isinstance(item, str):
            return [text_elements(" ".join(item.split()), self.tokenizer, d.max_text_tokens, label, d.max_caption_chars)]
        if isinstance(item, os.PathLike):
            return self._file_rows(Path(item), label)
        if isinstance(item, Image.Image):
            return [image_elements(upright_rgb(item), d.image_size, d.patch_size, stride=d.image_stride)]
        if _is_array(item):
            return self._rows(image_from_array(item, label), label)
        wave, sr = mono_waveform(*item, label)
        return [speech_elements(waveform_at(wave, sr, d.sample_rate, d.max_speech_seconds), d.sample_rate, d.n_mels,
                                d.frames_per_element, d.max_speech_seconds, label)]

    def _file_rows(self, path: Path, label: str) -> list[Elements]:
        """Decode the file into the in-memory object of its kind, then take that object's route."""
        modality = file_modality(path)
        if modality == "text":
            return [row for caption in read_caption_file(path, label) for row in self._rows(caption, label)]
        try:  # the cap of a shard member: a file embeds here as the same member would in a shard
            data = read_bounded(path, self.cfg.data.max_member_bytes, "data.max_member_bytes")
        except BoundedReadError as exc:
            raise EvalError(str(exc)) from None
        return self._rows(self.decode_media(data, modality, label), label)

    def decode_media(self, data: bytes, modality: str, label: str):
        """A picture's or recording's bytes -> the PIL image or (waveform (T,), rate) pair ``embed`` takes, through
        the shard decoder's bounded functions (bombs refused from the header; only ``data.max_speech_seconds``
        of a recording decoded). DecodeError naming ``label`` when the bytes are not of that kind."""
        if modality == "image":
            return open_image(data, label)
        if modality == "speech":
            return read_speech(data, label, self.cfg.data.max_speech_seconds)
        raise ValueError(f"{label}: decode_media takes image or speech, not {modality!r}")

    # ------------------------------------------------------------ embeddings
    @torch.no_grad()
    def embed(self, items: Iterable[Any], batch_size: Optional[int] = None) -> torch.Tensor:
        """(rows, D) L2-normalised embeddings in input order, one row per input (per line of a .txt file).

        Inputs, mixed freely: ``str`` a caption; ``pathlib.Path`` (any ``os.PathLike``) an image
        (.jpg/.jpeg/.png/.webp), speech (.flac/.wav/.ogg) or text file (.txt, a caption per line); a PIL image;
        a (C, H, W) torch tensor or numpy array, uint8 or float in [0, 1], C = 1/3/4; a (waveform, sample_rate)
        pair, the waveform (T,) or (C, T), float (or int16/int32 PCM), torch or numpy, any rate (resampled).

        A caption (``str``) that is mostly words the tokenizer never saw in training still embeds, but with one
        ``UserWarning`` per call naming such captions: "mostly" means at least half of its words of 2+ characters,
        and a word is unseen when it holds an unknown or byte-fallback piece or is spelled out one character per
        piece (``Tokenizer.unfamiliar_words``; a bytes tokenizer has no vocabulary and never warns). The demo
        model knows colours and shapes: "dog" is d-o-g to it, and its score says nothing about dogs.
        """
        items = list(items)
        known = self.modalities
        for i, item in enumerate(items):
            if modality_of(item) not in known:
                raise EvalError(f"{describe(item, i)}: this model was trained without {modality_of(item)} (it has {known})")
        self._warn_unfamiliar(items)
        return self.embed_elements([e for i, x in enumerate(items) for e in self.preprocess(x, i)], batch_size)

    @torch.no_grad()
    def embed_elements(self, elements: list[Elements], batch_size: Optional[int] = None) -> torch.Tensor:
        """(len(elements), D) L2-normalised, in order: rows already prepared (:meth:`preprocess`, or a shard
        sample's rows from ``data.elements.sample_rows``), batched ``batch_size`` at a time."""
        rows = [(e, str(n), None) for n, e in enumerate(elements)]
        if not rows:
            return torch.empty(0, self.embedding_dim)
        batch_size = batch_size or self.cfg.train.micro_batch_size
        positions, embeddings = [], []
        for start in range(0, len(rows), batch_size):
            batch = collate_elements(rows[start : start + batch_size])  # rows grouped by modality
            pooled = self.embed_fn(self.model, batch.to(self.device))  # {m: (B_m, D)}
            for m, part in batch.parts.items():
                positions += [int(k) for k in part.keys]
                embeddings.append(pooled[m].cpu())
        z = torch.cat(embeddings)  # (n, D) in batch order
        return z[torch.tensor(positions).argsort()]  # back to input order

    def _warn_unfamiliar(self, items: list[Any]) -> None:
        """One warning naming the captions among ``items`` that are mostly unseen words (see :meth:`embed`)."""
        captions = [x.source if isinstance(x, Item) else x for x in items
                    if isinstance(x, str) or (isinstance(x, Item) and not x.is_file)]
        flagged = []
        for caption in captions:
            unseen, judged = self.tokenizer.unfamiliar_words(caption)
            if judged and len(unseen) * 2 >= judged:
                flagged.append(f"{caption[:60]!r} ({', '.join(unseen[:5])})")
        if flagged:
            shown = "; ".join(flagged[:MAX_FLAGGED_SHOWN]) + (
                f"; and {len(flagged) - MAX_FLAGGED_SHOWN} more" if len(flagged) > MAX_FLAGGED_SHOWN else "")
            warnings.warn(
                f"{len(flagged)} of {len(captions)} caption(s) are mostly words this model's tokenizer "
                f"({self.tokenizer.vocab_size} pieces) never saw in training, so their embeddings and scores mean "
                f"little: {shown}. The model folder's README.md says what it was trained on.",
                UserWarning, stacklevel=4)  # past embed and torch.no_grad's wrapper: the caller's line

    def embed_texts(self, texts: Iterable[str]) -> torch.Tensor:
        """(len(texts), D): one caption each."""
        return self.embed(list(texts))

    def embed_files(self, paths: Iterable[str | os.PathLike]) -> torch.Tensor:
        """(rows, D): one row per image/speech file, one per caption line of a .txt file."""
        return self.embed([Path(p) for p in paths])

    def embed_images(self, images: Iterable[Any]) -> torch.Tensor:
        """(len(images), D): PIL images, (C, H, W) tensors/arrays or image file paths."""
        return self.embed([Path(x) if isinstance(x, str) else x for x in images])

    def embed_speech(self, clips: Iterable[Any]) -> torch.Tensor:
        """(len(clips), D): (waveform, sample_rate) pairs or audio file paths."""
        return self.embed([Path(x) if isinstance(x, str) else x for x in clips])

