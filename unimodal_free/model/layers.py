"""Transformer pieces shared by the encoder, the predictor and the readout.

Pre-norm blocks, fused projections and ``scaled_dot_product_attention`` so the
CPU path uses one fused kernel per attention. Nothing here knows a modality.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, nh, T, hs)


def _merge(x: torch.Tensor) -> torch.Tensor:
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the latent array (no mask: latents are never padding)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"self-attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # fused q, k, v
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, D)
        q, k, v = (_heads(t, self.num_heads) for t in (q, k, v))  # (B, nh, N, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(_merge(y))


class CrossAttention(nn.Module):
    """Queries attend to a key/value set; ``kv_padding`` (B, M) True marks keys to ignore."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # fused k, v
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_padding: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(kv).chunk(2, dim=-1)  # 2 x (B, M, D)
        q, k, v = _heads(self.q(q), self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads)
        mask = None
        if kv_padding is not None:
            mask = ~kv_padding[:, None, None, :]  # (B, 1, 1, M) True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(_merge(y))  # (B, Nq, D)


class CheckpointableBlock(nn.Module):
    """A block whose activations can be recomputed in backward instead of kept (``model.activation_checkpointing``).

    With ``checkpoint`` on and gradients enabled, ``forward`` keeps only the
    block's inputs and reruns :meth:`block` in backward (torch.utils.checkpoint,
    non-reentrant, RNG state preserved): the R views x rows of latents the
    blocks would otherwise hold (~14 N x D per block and row-view, plus the
    attention) shrink to one N x D each, for one more forward of the blocks.
    Parameters live in submodules called through ``__call__``, so ZeRO-3
    gathers them in the recomputation too. The teacher (no grad) never
    checkpoints.
    """

    checkpoint = False

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self.block, *args, use_reentrant=False)
        return self.block(*args)

    def block(self, *args: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class LatentBlock(CheckpointableBlock):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def block(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossBlock(CheckpointableBlock):
    """Pre-norm cross-attention block (Perceiver): queries read a key/value set.

    ``query_residual=False`` drops the query from the residual path; the
    element readout uses it so its output cannot be its (position-only) query.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0, query_residual: bool = True):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)
        self.query_residual = query_residual

    def block(self, q: torch.Tensor, kv: torch.Tensor, kv_padding: torch.Tensor | None = None) -> torch.Tensor:
        y = self.attn(self.norm_q(q), self.norm_kv(kv), kv_padding)
        x = q + y if self.query_residual else y
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """nanoGPT/MAE init: N(0, 0.02) linears, zero biases, unit LayerNorms.

    Token embeddings get N(0, 1): they stand in for raw element values and sit
    next to unit-scale Fourier features, so at 0.02 the token content would be
    invisible at init (every caption looks alike and alignment stalls).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=1.0)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
