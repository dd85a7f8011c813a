"""Element embedding: the only place where modalities differ inside the model.

Each modality enters through a :class:`ModalityAdapter` that declares its
output width (raw values, or a token embedding for text, concatenated with
Fourier features of the coordinates). :class:`ElementEmbedding` pads every
adapter's output to one common width with a learned per-modality padding
vector (Perceiver IO's multimodal recipe) and applies one shared projection to
``d_model``. Everything after it is modality-blind.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from unimodal_free.batch import ModalitySpec, Rows

# Perceiver IO's ``min_padding_size``: even the widest modality gets this many
# learned padding channels, so every modality carries an identity signal.
MIN_PADDING = 4


class FourierFeatures(nn.Module):
    """Perceiver Fourier position features: [x, sin(pi f x), cos(pi f x)] per axis.

    Frequencies are linear in [1, max_freq / 2], so ``max_freq`` positions per
    axis (coordinates in [-1, 1]) are resolved.
    """

    def __init__(self, coord_dims: int, num_bands: int, max_freq: float):
        super().__init__()
        if coord_dims <= 0:
            raise ValueError(f"Fourier features: coord_dims must be > 0, got {coord_dims}")
        if num_bands <= 0:
            raise ValueError(f"Fourier features: model.fourier_bands must be > 0, got {num_bands}")
        if max_freq < 2:
            raise ValueError(f"Fourier features: model.fourier_max_freq must be >= 2, got {max_freq}")
        self.coord_dims = coord_dims
        self.num_bands = num_bands
        self.max_freq = max_freq
        self.width = coord_dims * (2 * num_bands + 1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if coords.shape[-1] != self.coord_dims:
            raise ValueError(f"Fourier features: coords have {coords.shape[-1]} dims, expected {self.coord_dims}")
        # Always fp32 (not a buffer, so a bf16 student computes the same features as the fp32 teacher).
        freqs = torch.linspace(1.0, self.max_freq / 2, self.num_bands, device=coords.device) * math.pi  # (F,)
        coords = coords.float()
        angles = coords.unsqueeze(-1) * freqs  # (B, M, Dc, F)
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, M, Dc*2F)
        return torch.cat([coords, feats], dim=-1)  # (B, M, width)


class ModalityAdapter(nn.Module):
    """One modality's elements -> ``(B, M, width)`` raw features; declares ``width``."""

    def __init__(self, spec: ModalitySpec, fourier_bands: int, fourier_max_freq: float, text_embed_dim: int):
        super().__init__()
        if (spec.value_dim > 0) == (spec.vocab_size > 0):
            raise ValueError(
                f"modality {spec.name!r}: exactly one of value_dim ({spec.value_dim}) and "
                f"vocab_size ({spec.vocab_size}) must be > 0"
            )
        if spec.coord_dims <= 0:
            raise ValueError(f"modality {spec.name!r}: coord_dims must be > 0, got {spec.coord_dims}")
        self.name = spec.name
        self.position = FourierFeatures(spec.coord_dims, fourier_bands, fourier_max_freq)
        if spec.vocab_size > 0:
            if text_embed_dim <= 0:
                raise ValueError(f"modality {spec.name!r}: model.text_embed_dim must be > 0, got {text_embed_dim}")
            self.token_embed = nn.Embedding(spec.vocab_size, text_embed_dim)
            self.value_dim = text_embed_dim
        else:
            self.token_embed = None
            self.value_dim = spec.value_dim
        self.width = self.value_dim + self.position.width

    def empty_input(self, device: torch.device) -> Rows:
        """Zero rows (one element slot each) of this modality, on ``device``."""
        if self.token_embed is not None:
            values = torch.zeros(0, 1, dtype=torch.long, device=device)  # (0, 1) ids
        else:
            values = torch.zeros(0, 1, self.value_dim, device=device)  # (0, 1, C)
        coords = torch.zeros(0, 1, self.position.coord_dims, device=device)  # (0, 1, Dc)
        return Rows(values, coords, torch.zeros(0, 1, dtype=torch.bool, device=device))

    def forward(self, values: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        if self.token_embed is not None:
            x = self.token_embed(values)  # (B, M) ids -> (B, M, E)
        else:
            if values.shape[-1] != self.value_dim:
                raise ValueError(
                    f"modality {self.name!r}: elements have {values.shape[-1]} values, expected {self.value_dim}"
                )
            x = values.float()
        return torch.cat([x.float(), self.position(coords)], dim=-1)  # (B, M, width) fp32


def standardize_values(values: torch.Tensor, padding: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample standardisation of continuous element values (per-utterance CMVN, per-image standardisation).

    values (B, M, C), padding (B, M) -> (B, M, C): minus the row's mean
    element over its real elements, divided by the row's std over its real
    values. What is common to all of a row's elements (an image's
    background colour, a recording's channel) is removed, so what differs
    between elements (the object, the phones) is what the encoder sees.
    Computed on the elements given (a student view: its visible elements).
    """
    values = values.masked_fill(padding.unsqueeze(-1), 0.0)  # padded content (even NaN) never counts
    real = (~padding).unsqueeze(-1).to(values.dtype)  # (B, M, 1)
    count = real.sum(1, keepdim=True).clamp(min=1)  # (B, 1, 1)
    mean = (values * real).sum(1, keepdim=True) / count  # (B, 1, C)
    centred = (values - mean) * real
    var = centred.pow(2).sum((1, 2), keepdim=True) / (count * values.shape[-1])  # (B, 1, 1)
    return centred / (var + eps).sqrt()


class ElementEmbedding(nn.Module):
    """Adapters -> common width (learned per-modality padding) -> one shared linear to d_model.

    Per-modality padding vectors are direct parameters named ``pad_<modality>``
    (not a ParameterDict) so ZeRO-3 gathers them with this module's forward.
    """

    def __init__(self, specs: dict[str, ModalitySpec], d_model: int, fourier_bands: int,
                 fourier_max_freq: float, text_embed_dim: int, standardize: bool = False):
        super().__init__()
        self.standardize = standardize
        if not specs:
            raise ValueError("element embedding: no modality specs given")
        self.adapters = nn.ModuleDict(
            {name: ModalityAdapter(spec, fourier_bands, fourier_max_freq, text_embed_dim) for name, spec in specs.items()}
        )
        self.width = max(a.width for a in self.adapters.values()) + MIN_PADDING
        for name, adapter in self.adapters.items():
            self.register_parameter(f"pad_{name}", nn.Parameter(torch.randn(self.width - adapter.width) * 0.02))
        self.proj = nn.Linear(self.width, d_model)

    def forward(self, modality: str, values: torch.Tensor, coords: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """values (B, M, C) or ids (B, M), coords (B, M, Dc), padding (B, M) -> (B, M, D); padding rows zeroed."""
        if modality not in self.adapters:
            raise ValueError(f"element embedding: unknown modality {modality!r} (known: {sorted(self.adapters)})")
        if self.standardize and values.is_floating_point():
            values = standardize_values(values.float(), padding)  # (B, M, C)
        x = self.adapters[modality](values, coords)  # (B, M, width_m)
        pad = getattr(self, f"pad_{modality}")
        x = x.to(pad.dtype)  # the module's dtype (fp32, or bf16 under a bf16 engine)
        x = torch.cat([x, pad.expand(*x.shape[:-1], -1)], dim=-1)  # (B, M, width)
        x = self.proj(x)  # (B, M, D)
        # Zero padded elements so their content (even NaN) never reaches attention.
        return x.masked_fill(padding.unsqueeze(-1), 0.0)
