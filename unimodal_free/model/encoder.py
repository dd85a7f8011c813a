"""Perceiver encoder: N learned latents read the elements, then L latent blocks.

Cost is O(M N) for the cross-attention and O(L N^2) for the latent stack, so
it grows linearly with input length, and every modality lands in the same
``(rows, N, D)`` latent array.

``num_stacks > 1`` (``model.latent_stacks="per_modality"``) gives each input
stream its own L latent blocks (data2vec's one-model-per-modality, for the
shared-vs-separate experiment); the latent array and the cross-attention stay
shared. The encoder never knows modalities: the caller says which stack each
sub-batch uses by index.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from unimodal_free.model.layers import CrossBlock, LatentBlock
from unimodal_free.model.summary import ElementSummary


class PerceiverEncoder(nn.Module):
    def __init__(self, d_model: int, num_latents: int, num_blocks: int, num_heads: int, cross_heads: int,
                 mlp_ratio: float, dropout: float = 0.0, num_stacks: int = 1, element_summary: str = "none"):
        super().__init__()
        for name, value in (("model.num_latents", num_latents), ("model.num_blocks", num_blocks)):
            if value <= 0:
                raise ValueError(f"encoder: {name} must be > 0, got {value}")
        if num_stacks <= 0:
            raise ValueError(f"encoder: num_stacks must be > 0, got {num_stacks}")
        self.latents = nn.Parameter(torch.randn(num_latents, d_model) * 0.02)
        self.cross = CrossBlock(d_model, cross_heads, mlp_ratio, dropout)
        if element_summary not in ("none", "max"):
            raise ValueError(f"encoder: model.element_summary must be 'none' or 'max', got {element_summary!r}")
        # Created only when used, so a plain Perceiver's checkpoint keys stay as they are.
        self.summary = ElementSummary(d_model) if element_summary == "max" else None

        def stack() -> nn.ModuleList:
            return nn.ModuleList(LatentBlock(d_model, num_heads, mlp_ratio, dropout) for _ in range(num_blocks))

        # One stack keeps its historical name (``blocks``: checkpoints and exports load as before);
        # separate stacks are ``stacks.<stack index>``.
        if num_stacks == 1:
            self.blocks = stack()
        else:
            self.stacks = nn.ModuleList(stack() for _ in range(num_stacks))

    def latent_stacks(self) -> list[nn.ModuleList]:
        """The latent block stacks, indexed as ``forward``'s ``stack_ids``."""
        return [self.blocks] if hasattr(self, "blocks") else list(self.stacks)

    def forward(self, inputs: list[tuple[torch.Tensor, torch.Tensor]], stack_ids: list[int] | None = None
                ) -> list[torch.Tensor]:
        """inputs: per sub-batch (elements (B_m, M_m, D), padding (B_m, M_m)); stack_ids: per sub-batch,
        the latent stack it runs through (required with several stacks).

        Each sub-batch is cross-attended to its own elements (no padding across
        modalities). With one stack the resulting latents are concatenated
        along the batch axis and the stack runs once; with several, each
        sub-batch runs its own stack. Returns every block's output, each
        ``(sum B_m, N, D)``, in input order.
        """
        stacks = self.latent_stacks()
        if len(stacks) > 1 and (stack_ids is None or len(stack_ids) != len(inputs)):
            raise ValueError(f"encoder: {len(stacks)} latent stacks need one stack id per input, got {stack_ids}")
        latents = []
        for x, padding in inputs:
            q = self.latents.expand(x.shape[0], -1, -1)  # (B_m, N, D)
            z = self.cross(q, x, padding)  # (B_m, N, D)
            if self.summary is not None:
                z = z + self.summary(x, padding).unsqueeze(1)  # (B_m, 1, D): the same summary for every latent
            latents.append(z)
        if len(stacks) == 1:
            z = torch.cat(latents, dim=0) if len(latents) > 1 else latents[0]  # (B, N, D)
            return run_stack(stacks[0], z)
        per_input = [run_stack(stacks[i], z) for i, z in zip(stack_ids, latents)]  # [input][block] (B_m, N, D)
        return [torch.cat(outs, dim=0) if len(outs) > 1 else outs[0] for outs in zip(*per_input)]  # (B, N, D)


def run_stack(blocks: nn.ModuleList, z: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output of ``blocks`` applied in turn to ``z`` (B, N, D)."""
    outputs = []
    for block in blocks:
        z = block(z)
        outputs.append(z)
    return outputs
