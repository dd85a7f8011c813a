"""Analytic FLOPs of one training step (2 per multiply-accumulate), for MFU.

Counts useful work: real (non-padding) elements only, matmuls only (norms,
softmax and activations are a few percent and ignored, as in PaLM's MFU).
Student: forward + backward (3x forward) over the R masked views; teacher:
one forward over the full input (plus its readout of each view in the
``elements`` target space).
"""

from __future__ import annotations

import numpy as np

from unimodal_free.batch import Batch, modality_specs
from unimodal_free.config import alignment_on
from unimodal_free.model.embedding import MIN_PADDING
from unimodal_free.model.summary import HIDDEN_RATIO as SUMMARY_RATIO
from unimodal_free.objective.masking import mask_spec, num_masked


def _self_block(T: float, D: int, H: int) -> float:
    # qkv + out projection + MLP per token, plus QK^T and AV.
    return 2 * (T * (4 * D * D + 2 * D * H) + 2 * T * T * D)


def _cross_block(Tq: np.ndarray | float, Tk: np.ndarray | float, D: int, H: int) -> np.ndarray | float:
    # q and out projections + MLP on queries, k/v projections on keys, QK^T and AV.
    return 2 * (Tq * (2 * D * D + 2 * D * H) + Tk * 2 * D * D + 2 * Tq * Tk * D)


def _element_width(model_cfg, data_cfg) -> int:
    """The element embedding's common width (``ElementEmbedding.width``): the widest modality + padding."""
    m = model_cfg
    widths = []
    for spec in modality_specs(data_cfg, vocab_size=1).values():
        values = m.text_embed_dim if spec.vocab_size else spec.value_dim
        widths.append(values + spec.coord_dims * (2 * m.fourier_bands + 1))
    return max(widths) + MIN_PADDING


def step_flops(model_cfg, objective_cfg, masking_cfg, data_cfg, batch: Batch) -> dict[str, float]:
    """{"student": fwd+bwd FLOPs over R views, "teacher": forward FLOPs} of one step on ``batch``.

    Takes the config sections it reads: ``model``, ``objective``, ``masking``, ``data`` (element widths).
    Computed on the host from the batch's row lengths.
    """
    m, obj = model_cfg, objective_cfg
    D, N, L, R = m.d_model, m.num_latents, m.num_blocks, obj.num_views
    H = int(D * m.mlp_ratio)
    width = _element_width(model_cfg, data_cfg)
    latent_stack = L * _self_block(N, D, H)  # per row, independent of the input length
    query_width = 2 * (2 * m.fourier_bands + 1)  # readout queries: widest coordinate features (2-D)

    summary = 2 * 2 * D * (SUMMARY_RATIO * D) if m.element_summary == "max" else 0  # per element: D -> 2D -> D (model/summary.py)

    def encoder(M: np.ndarray) -> np.ndarray:  # per row with M elements
        return 2 * M * width * D + M * summary + _cross_block(N, M, D, H) + latent_stack

    def readout(T: np.ndarray) -> np.ndarray:
        return 2 * T * query_width * D + _cross_block(T, N, D, H)

    student = teacher = 0.0
    for name, part in batch.parts.items():
        real = np.asarray(part.lengths, dtype=np.float64)  # (B,) host-side counts: no device read
        masked = np.asarray(num_masked(part.lengths, mask_spec(masking_cfg, name).ratio), dtype=np.float64)
        visible = real - masked
        teacher += float(encoder(real).sum())
        fwd = encoder(visible)
        if obj.target_space == "latents":
            fwd = fwd + obj.predictor_blocks * _self_block(N, D, H) + 2 * N * D * D
        else:
            fwd = fwd + readout(masked) + 2 * masked * D * D
            teacher += float(R * readout(masked).sum())
        if alignment_on(obj) and obj.align_input == "full":
            fwd = fwd + encoder(real) / R  # one unmasked pass per row, spread over its R views
        student += float(3 * R * fwd.sum())
    return {"student": student, "teacher": teacher}
