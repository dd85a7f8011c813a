"""Peers at equal sizes: Hugging Face's PerceiverModel and a plain full-attention encoder.

Both take already-embedded elements ``(B, M, width)``; their fwd+bwd is timed
against ours on the same rows and element counts. The full-attention encoder is
the cost model of a per-modality data2vec encoder: every element attends to every
other one, O(M^2) per layer, where our Perceiver front end pays O(M*N).
transformers is the ``bench`` extra: imported here only, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PeerSize:
    """The sizes a peer must share with our model to be compared with it."""

    d_model: int
    num_latents: int
    depth: int
    num_heads: int
    cross_heads: int
    mlp_ratio: float
    input_width: int

    @classmethod
    def from_model_config(cls, model_cfg, input_width: int | None = None) -> "PeerSize":
        return cls(
            d_model=model_cfg.d_model,
            num_latents=model_cfg.num_latents,
            depth=model_cfg.num_blocks,
            num_heads=model_cfg.num_heads,
            cross_heads=model_cfg.cross_heads,
            mlp_ratio=model_cfg.mlp_ratio,
            input_width=input_width or model_cfg.d_model,
        )


def hf_perceiver(size: PeerSize) -> nn.Module:
    """transformers.PerceiverModel with no preprocessor/decoder: inputs go straight to cross-attention."""
    from transformers import PerceiverConfig, PerceiverModel

    widening = max(1, int(round(size.mlp_ratio)))
    config = PerceiverConfig(
        num_latents=size.num_latents,
        d_latents=size.d_model,
        d_model=size.input_width,  # HF's d_model is the width of the inputs (kv_dim)
        num_blocks=1,
        num_self_attends_per_block=size.depth,
        num_self_attention_heads=size.num_heads,
        num_cross_attention_heads=size.cross_heads,
        self_attention_widening_factor=widening,
        cross_attention_widening_factor=widening,
        attention_probs_dropout_prob=0.0,
    )
    return PerceiverModel(config)


def full_attention_encoder(size: PeerSize) -> nn.Module:
    """torch.nn.TransformerEncoder, pre-norm, batch-first: full self-attention over the elements."""
    layer = nn.TransformerEncoderLayer(
        d_model=size.d_model,
        nhead=size.num_heads,
        dim_feedforward=int(size.mlp_ratio * size.d_model),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=size.depth, enable_nested_tensor=False)


def full_attention_flops(size: PeerSize, rows: int, num_elements: int) -> float:
    """Analytic fwd+bwd matmul FLOPs of :func:`full_attention_encoder` on ``rows x num_elements``."""
    d, m = size.d_model, num_elements
    hidden = int(size.mlp_ratio * d)
    per_layer = 2 * m * (4 * d * d + 2 * d * hidden) + 4 * m * m * d  # qkvo + mlp + (QK^T, AV)
    return 3.0 * rows * size.depth * per_layer  # backward ~ 2x forward


def peer_inputs(rows: int, num_elements: int, width: int, lengths: torch.Tensor | None = None, seed: int = 0,
                device: torch.device | str = "cpu"):
    """(x (B, M, width), keep (B, M) bool or None) on ``device``: random elements, ``keep`` False on padding.

    Drawn on the CPU (the same numbers on every device), then moved.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, num_elements, width, generator=gen).to(device)
    if lengths is None:
        return x, None
    keep = torch.arange(num_elements, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)  # (B, M)
    return x, keep


def fwd_bwd_fn(model: nn.Module, kind: str, x: torch.Tensor, keep: torch.Tensor | None):
    """A closure doing one forward + backward of a peer with a mean-square loss on its outputs."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        if kind == "hf_perceiver":
            mask = None if keep is None else keep.float()
            out = model(inputs=x, attention_mask=mask).last_hidden_state  # (B, N, D)
        elif kind == "full_attention":
            pad = None if keep is None else ~keep
            out = model(x, src_key_padding_mask=pad)  # (B, M, D)
        else:
            raise ValueError(f"unknown peer {kind!r}")
        out.float().pow(2).mean().backward()

    return step
