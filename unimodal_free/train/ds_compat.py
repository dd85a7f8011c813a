"""DeepSpeed 0.19.8 cannot train 0-dim parameters; store them as 1-element tensors while training.

The model's learnable logit scale is a 0-dim parameter. DeepSpeed moves
parameters through ``p.data.view(torch.uint8)`` (model broadcast at
``initialize``, ZeRO-3 partitioning), which raises for 0-dim tensors, and its
fp32 gradient clipping without ZeRO multiplies in place with a (1,)-shaped
coefficient. So before the engine is built, every 0-dim parameter's data is
reshaped to ``(1,)`` (same storage, same value; the model's arithmetic
broadcasts identically) in the student and the teacher, and every state
dict the trainer writes for others (each checkpoint's model.safetensors, the
export) is put back into the model's own shapes with :func:`model_shapes`.
With no 0-dim parameters in the model all of this is a no-op.
"""

from __future__ import annotations

import torch


def lift_zero_dim_params(module: torch.nn.Module) -> set[str]:
    """Reshape 0-dim parameters to (1,) in place; returns their names."""
    names = set()
    for name, p in module.named_parameters(remove_duplicate=False):
        if p.dim() == 0:
            p.data = p.data.reshape(1)
            names.add(name)
    return names


def model_shapes(state_dict: dict[str, torch.Tensor], lifted: set[str]) -> dict[str, torch.Tensor]:
    """A state dict with lifted parameters back in their 0-dim model shape."""
    return {k: (v.reshape(()) if k in lifted and v.numel() == 1 else v) for k, v in state_dict.items()}


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """load_state_dict that accepts model-shaped tensors for lifted (1,)-shaped parameters."""
    own = module.state_dict()
    fixed = {
        k: (v.reshape(own[k].shape) if k in own and own[k].shape != v.shape and own[k].numel() == v.numel() else v)
        for k, v in state_dict.items()
    }
    module.load_state_dict(fixed)
