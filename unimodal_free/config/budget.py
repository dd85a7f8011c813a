"""What a config costs, counted from its numbers alone, before any tensor exists.

A config can come from anyone (a model folder's ``config.json``, an export's
metadata, a ``--set``): each integer key is bounded in its rule, and the two
budgets here bound what the keys build together. :func:`parameter_count` is
exact (``tests/test_hostile_run.py`` compares it with the built model);
:func:`activation_bytes` is an upper estimate of one micro-batch's student
activations. Both are arithmetic on the config (and the tokenizer's
vocabulary), so a hostile config is refused in microseconds and without
allocating. Validation checks them with the vocabulary unknown (0); the trainer
and the model loaders check again with the tokenizer's.
"""

from __future__ import annotations

import math
from typing import Iterator

from unimodal_free.config.sections import alignment_on
from unimodal_free.modalities import HOP_SECONDS, N_FFT_SECONDS, TABLE

MAX_PARAMETERS = 10**10  # 10 B: 40 GB of fp32 weights; a 1 B-parameter model passes with room to spare
MAX_ACTIVATION_BYTES = 4 << 40  # 4 TiB: more than any single machine holds
MIN_PADDING = 4  # model/embedding.py's padding channels (the config package cannot import the model)
SUMMARY_RATIO = 2  # model/summary.py's HIDDEN_RATIO: the element summary's hidden width over d_model


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _blocks(m) -> tuple[int, int]:
    """Parameters of one latent (self-attention) block and of one cross-attention block."""
    D, H = m.d_model, int(m.d_model * m.mlp_ratio)
    mlp = _linear(D, H) + _linear(H, D)
    attention = _linear(D, 3 * D) + _linear(D, D)  # fused qkv + out; cross: q + fused kv + out, the same count
    return 2 * 2 * D + attention + mlp, 3 * 2 * D + attention + mlp


def _widths(m, data, vocab_size: int) -> Iterator[tuple[int, int, int]]:
    """(value width, coordinate dims, token-embedding parameters) of each modality's element embedding."""
    for mod in TABLE:
        if mod.tokens:
            yield m.text_embed_dim, mod.coord_dims, vocab_size * m.text_embed_dim
        else:
            yield mod.value_width(data), mod.coord_dims, 0


def parameter_count(cfg, vocab_size: int = 0) -> int:
    """Parameters of the model ``cfg`` builds (``model.build_model``), exactly; ``vocab_size``: the tokenizer's."""
    m, o = cfg.model, cfg.objective
    D, fourier = m.d_model, 2 * m.fourier_bands + 1
    latent, cross = _blocks(m)
    widths = [(v + c * fourier, embed) for v, c, embed in _widths(m, cfg.data, vocab_size)]
    width = max(w for w, _ in widths) + MIN_PADDING
    total = sum(embed + width - w for w, embed in widths) + _linear(width, D)  # embedding: tokens, pads, projection
    stacks = len(TABLE) if m.latent_stacks == "per_modality" else 1
    total += m.num_latents * D + cross + stacks * m.num_blocks * latent  # encoder
    if m.element_summary == "max":  # norm, D -> ratio x D -> D
        total += 2 * D + _linear(D, SUMMARY_RATIO * D) + _linear(SUMMARY_RATIO * D, D)
    total += 2 * D  # final norm
    if o.target_space == "latents":
        total += o.predictor_blocks * latent + 2 * D + _linear(D, D)
    else:  # readout (queries from the widest coordinates, a modality embedding each) and head
        query = max(mod.coord_dims for mod in TABLE) * fourier
        total += _linear(query, D) + len(TABLE) * D + cross + 2 * D + _linear(D, D)
    if alignment_on(o):
        total += _linear(D, o.align_dim, bias=False) + 1  # projection and logit scale
    if o.cross_weight > 0:  # one D -> D head per ordered pair of modalities
        total += len(TABLE) * (len(TABLE) - 1) * _linear(D, D)
    return total


def max_elements(data) -> int:
    """The most elements one row of any modality can have under ``data``."""
    speech_frames = max(0, math.floor((data.max_speech_seconds - N_FFT_SECONDS) / HOP_SECONDS) + 1)
    return max((data.image_size // data.image_stride) ** 2, speech_frames // data.frames_per_element,
               data.max_text_tokens)


def activation_bytes(cfg) -> int:
    """Upper estimate of one micro-batch's fp32 activations: every row in R views plus the teacher's pass,
    each through the cross-attention over its elements and all latent blocks (about 14 N x D per block
    and the N x N attention per head, as model/layers.py's CheckpointableBlock counts them)."""
    m, o, t = cfg.model, cfg.objective, cfg.train
    N, D = m.num_latents, m.d_model
    M = max_elements(cfg.data)
    blocks = m.num_blocks + (o.predictor_blocks if o.target_space == "latents" else 1) + 1
    per_row = blocks * (14 * N * D + m.num_heads * N * N) + M * 6 * D + m.cross_heads * N * M
    return 4 * t.micro_batch_size * (o.num_views + 1) * per_row


def over_budget(cfg, vocab_size: int = 0) -> Iterator[tuple[str, str]]:
    """(dotted section, what is wrong) for each budget ``cfg`` exceeds; nothing when it fits."""
    m = cfg.model
    params = parameter_count(cfg, vocab_size)
    if params > MAX_PARAMETERS:
        yield "model", (f"builds {params:.3g} parameters, over the budget of {MAX_PARAMETERS:.3g} "
                        f"(model.d_model={m.d_model}, model.num_blocks={m.num_blocks}, model.num_latents="
                        f"{m.num_latents}, model.mlp_ratio={m.mlp_ratio}, model.text_embed_dim={m.text_embed_dim}"
                        f"{f', vocabulary {vocab_size}' if vocab_size else ''})")
    act = activation_bytes(cfg)
    if act > MAX_ACTIVATION_BYTES:
        yield "train.micro_batch_size", (
            f"{cfg.train.micro_batch_size} rows need about {act / 2**40:.3g} TiB of activations per micro-batch, "
            f"over the budget of {MAX_ACTIVATION_BYTES / 2**40:g} TiB (objective.num_views={cfg.objective.num_views}, "
            f"model.num_latents={m.num_latents}, model.d_model={m.d_model}, up to {max_elements(cfg.data)} "
            f"elements per row from data.*)")
