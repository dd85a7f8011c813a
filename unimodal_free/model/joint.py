"""The joint model (the student): element embedding -> Perceiver encoder -> heads.

``forward`` runs the whole student side of a training step (masked views in,
predictions and the alignment loss out), so a DeepSpeed engine can wrap it
and ZeRO-3 sees every parameter used inside a module forward. ``encode`` is
the full-input path shared by the teacher, the pooled embedding and the
``align_input="full"`` alignment pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from unimodal_free.batch import ModalityBatch, ModalitySpec
from unimodal_free.config import Config
from unimodal_free.masking import MaskedView
from unimodal_free.modalities import MODALITIES
from unimodal_free.model.embedding import ElementEmbedding
from unimodal_free.model.encoder import PerceiverEncoder
from unimodal_free.model.alignment import Alignment
from unimodal_free.model.heads import Predictor, Readout
from unimodal_free.model.layers import CheckpointableBlock, init_weights

# (values, coords, padding) of one modality's rows.
Part = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class StudentOutput:
    predictions: dict[str, torch.Tensor]  # latents: (B_m*R, N, D); elements: (B_m*R, T, D)
    align_loss: torch.Tensor | None  # None when alignment is off
    logit_scale: torch.Tensor | None
    # Exactly 0.0, with a graph through every parameter of the modalities absent from the batch:
    # the loss adds it so those parameters get a (zero) gradient too (see JointModel.forward).
    absent_term: torch.Tensor


class JointModel(nn.Module):
    def __init__(self, cfg: Config, specs: dict[str, ModalitySpec]):
        super().__init__()
        m, obj = cfg.model, cfg.objective
        unknown = [name for name in specs if name not in MODALITIES]
        if unknown:
            raise ValueError(f"build_model: unknown modality {unknown[0]!r} (known: {list(MODALITIES)})")
        self.config = cfg
        self.modalities = [name for name in MODALITIES if name in specs]
        self.target_space = obj.target_space
        self.align_input = obj.align_input
        self.embed = ElementEmbedding(specs, m.d_model, m.fourier_bands, m.fourier_max_freq, m.text_embed_dim,
                                      m.standardize_values)
        self.encoder = PerceiverEncoder(m.d_model, m.num_latents, m.num_blocks, m.num_heads, m.cross_heads,
                                        m.mlp_ratio, m.dropout,
                                        num_stacks=len(self.modalities) if m.latent_stacks == "per_modality" else 1)
        self.norm = nn.LayerNorm(m.d_model)
        # Only the heads the config uses exist, so no parameter is left without a gradient.
        self.predictor = self.readout = self.head = self.align = None
        if obj.target_space == "latents":
            self.predictor = Predictor(m.d_model, obj.predictor_blocks, m.num_heads, m.mlp_ratio)
        elif obj.target_space == "elements":
            self.readout = Readout(specs, m.d_model, m.cross_heads, m.mlp_ratio, m.fourier_bands, m.fourier_max_freq)
            self.head = nn.Linear(m.d_model, m.d_model)
        else:
            raise ValueError(f"objective.target_space: {obj.target_space!r} is not one of ['latents', 'elements']")
        if obj.align_weight > 0:
            self.align = Alignment(m.d_model, obj.align_dim, obj.init_temperature, self.modalities)
        self.apply(init_weights)
        for module in self.modules():  # every latent, cross and predictor block of the student
            if isinstance(module, CheckpointableBlock):
                module.checkpoint = m.activation_checkpointing

    def encode(self, parts: dict[str, Part]) -> list[torch.Tensor]:
        """Every latent block's output, each (sum B_m, N, D), rows in ``parts`` order."""
        inputs = [(self.embed(name, *part), part[2]) for name, part in parts.items()]
        stack_ids = [self.modalities.index(name) for name in parts]  # the stack of each modality (per_modality)
        return self.encoder(inputs, stack_ids)

    def final(self, parts: dict[str, Part]) -> torch.Tensor:
        """Normalised final latents (sum B_m, N, D)."""
        return self.norm(self.encode(parts)[-1])

    def _every_modality(self, parts: dict[str, Part]) -> dict[str, Part]:
        """``parts`` in the model's modality order, a zero-row input for each modality it lacks.

        The same modules run the same number of times in the same order on
        every rank, only sizes differ: gradients become ready in the same
        order everywhere (ZeRO-1/2 fill their buckets in that order) and
        ZeRO-3 gathers the same parameters (its prefetch follows the trace).
        """
        if list(parts) != [name for name in self.modalities if name in parts]:
            raise ValueError(f"student forward: modalities {list(parts)} are not in the model's order {self.modalities}")
        device = next(iter(parts.values()))[1].device
        return {name: parts[name] if name in parts else self.embed.adapters[name].empty_input(device)
                for name in self.modalities}

    def forward(self, views: dict[str, MaskedView], pair_index: dict[str, torch.Tensor] | None = None,
                full: dict[str, ModalityBatch] | None = None, gather_fn=None, sum_fn=None) -> StudentOutput:
        """Student pass over the masked views of every modality present.

        views[m]: R masked views of modality m's B_m rows. pair_index[m] (B_m,)
        and, for ``align_input="full"``, the unmasked rows ``full`` feed the
        alignment loss; ``gather_fn``/``sum_fn`` are its cross-rank collectives
        (see :class:`Alignment`).

        Same parameter set every call: a modality absent from ``views`` runs
        through the student as a zero-row input and ``absent_term`` (the sum
        of its empty outputs, exactly 0.0) ties it to the loss. So every
        parameter gets a gradient every step on every rank, zero for what the
        batch does not hold: data-parallel ranks whose batches hold different
        modalities reduce the same gradients (DeepSpeed ZeRO 1/2 bucket a
        parameter when its gradient arrives; a missing one misaligns the
        buckets across ranks). Every parameter is still used inside its own
        module's forward, so ZeRO-3 gathers it as usual. ``views`` must be in
        the model's modality order (``Batch.parts`` is).
        """
        absent = [name for name in self.modalities if name not in views]
        parts = self._every_modality({name: (v.values, v.coords, v.padding) for name, v in views.items()})
        rows = [part[1].shape[0] for part in parts.values()]
        z = self.final(parts)  # (sum B_m R, N, D); absent modalities have 0 rows
        z_parts = dict(zip(parts, z.split(rows, dim=0)))
        if self.predictor is not None:
            pred = self.predictor(z)  # (sum B_m R, N, D): one call for all modalities
            outputs = dict(zip(parts, pred.split(rows, dim=0)))
        else:
            query = {name: v.target_coords for name, v in views.items()} | {name: parts[name][1] for name in absent}
            outputs = {name: self.head(self.readout(name, z_parts[name], query[name]))
                       for name in parts}  # (B_m R, T, D)
        predictions = {name: outputs[name] for name in views}
        absent_term = sum((outputs[name].float().sum() for name in absent), z.new_zeros((), dtype=torch.float32))
        align_loss = logit_scale = None
        if self.align is not None:
            if pair_index is None:
                raise ValueError("student forward: alignment is on (objective.align_weight > 0) but no pair_index given")
            if self.align_input == "full":
                if full is None:
                    raise ValueError("student forward: objective.align_input='full' needs the unmasked rows")
                full_parts = self._every_modality({name: (p.values, p.coords, p.padding) for name, p in full.items()})
                zf = self.final(full_parts).mean(1)  # (sum B_m, D)
                pooled = dict(zip(full_parts, zf.split([p[1].shape[0] for p in full_parts.values()], dim=0)))
            else:
                R = next(iter(views.values())).num_views
                pooled = {name: zm.view(-1, R, *z.shape[1:]).mean((1, 2)) for name, zm in z_parts.items()}  # (B_m, D)
            align_loss, logit_scale = self.align(pooled, pair_index, self.modalities, gather_fn, sum_fn)
        return StudentOutput(predictions, align_loss, logit_scale, absent_term)


def build_model(cfg: Config, specs: dict[str, ModalitySpec]) -> JointModel:
    """The student for ``cfg`` over the modalities in ``specs`` (see ``modality_specs``)."""
    return JointModel(cfg, specs)


def unwrap(model: nn.Module) -> JointModel:
    """The JointModel inside a DeepSpeed engine / EMATeacher / DDP wrapper."""
    while not isinstance(model, JointModel):
        inner = getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"expected a JointModel (or a wrapper with .module), got {type(model).__name__}")
        model = inner
    return model
