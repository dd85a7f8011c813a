"""The joint model: element embedding -> Perceiver encoder -> final norm, plus its heads.

Tensors in, latents out: ``encode``/``final`` take any modality's
:class:`~unimodal_free.batch.Rows` (a batch's sub-batches or a student's
masked views) and return latents; the heads (predictor or readout, the
alignment projection) are called by whoever trains or embeds. No loss, no
masking, no training state: eval, export and the model folder build this
class; training builds its subclass ``objective.task.Data2VecStudent``,
whose ``forward`` runs the training phases over the same modules (same
state-dict keys).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from unimodal_free.batch import ModalitySpec, Rows
from unimodal_free.config import alignment_on
from unimodal_free.modalities import MODALITIES
from unimodal_free.model.embedding import ElementEmbedding
from unimodal_free.model.encoder import PerceiverEncoder
from unimodal_free.model.heads import AlignmentProjection, CrossPredictor, Predictor, Readout
from unimodal_free.model.layers import CheckpointableBlock, init_weights


class JointModel(nn.Module):
    """One Perceiver for every modality, with the heads ``objective_cfg`` trains.

    ``model_cfg``: the ``model`` config section; ``objective_cfg``: the
    ``objective`` section, read only for which heads exist and their sizes
    (``target_space``, ``predictor_blocks``, ``align_weight``, ``align_dim``,
    ``init_temperature``): a checkpoint's keys follow from those.
    """

    def __init__(self, model_cfg, objective_cfg, specs: dict[str, ModalitySpec]):
        super().__init__()
        m, obj = model_cfg, objective_cfg
        unknown = [name for name in specs if name not in MODALITIES]
        if unknown:
            raise ValueError(f"build_model: unknown modality {unknown[0]!r} (known: {list(MODALITIES)})")
        self.modalities = [name for name in MODALITIES if name in specs]
        # Creation order is the order ``init_weights`` draws from the seeded RNG: keep it.
        self.embed = ElementEmbedding(specs, m.d_model, m.fourier_bands, m.fourier_max_freq, m.text_embed_dim,
                                      m.standardize_values)
        self.encoder = PerceiverEncoder(m.d_model, m.num_latents, m.num_blocks, m.num_heads, m.cross_heads,
                                        m.mlp_ratio, m.dropout,
                                        num_stacks=len(self.modalities) if m.latent_stacks == "per_modality" else 1,
                                        element_summary=m.element_summary)
        self.norm = nn.LayerNorm(m.d_model)
        # Only the heads the config uses exist, so no parameter is left without a gradient.
        self.predictor = self.readout = self.head = self.align = self.cross_predictor = None
        if obj.target_space == "latents":
            self.predictor = Predictor(m.d_model, obj.predictor_blocks, m.num_heads, m.mlp_ratio)
        elif obj.target_space == "elements":
            self.readout = Readout(specs, m.d_model, m.cross_heads, m.mlp_ratio, m.fourier_bands, m.fourier_max_freq)
            self.head = nn.Linear(m.d_model, m.d_model)
        else:
            raise ValueError(f"objective.target_space: {obj.target_space!r} is not one of ['latents', 'elements']")
        if alignment_on(obj):
            self.align = AlignmentProjection(m.d_model, obj.align_dim, obj.init_temperature, self.modalities)
        if obj.cross_weight > 0:
            self.cross_predictor = CrossPredictor(m.d_model, self.modalities)
        self.apply(init_weights)
        for module in self.modules():  # every latent, cross and predictor block of the student
            if isinstance(module, CheckpointableBlock):
                module.checkpoint = m.activation_checkpointing

    def encode(self, parts: Mapping[str, Rows]) -> list[torch.Tensor]:
        """Every latent block's output, each (sum B_m, N, D), rows in ``parts`` order (see ``split_rows``)."""
        inputs = [(self.embed(name, p.values, p.coords, p.padding), p.padding) for name, p in parts.items()]
        stack_ids = [self.modalities.index(name) for name in parts]  # the stack of each modality (per_modality)
        return self.encoder(inputs, stack_ids)

    def final(self, parts: Mapping[str, Rows]) -> torch.Tensor:
        """Normalised final latents (sum B_m, N, D)."""
        return self.norm(self.encode(parts)[-1])


def build_model(model_cfg, objective_cfg, specs: dict[str, ModalitySpec]) -> JointModel:
    """The model for the ``model`` and ``objective`` config sections over the modalities in ``specs``.

    What eval, export and the model folder load weights into; training builds
    ``objective.task.Data2VecStudent`` (same modules, same keys).
    """
    return JointModel(model_cfg, objective_cfg, specs)


def unwrap(model: nn.Module) -> JointModel:
    """The JointModel inside a DeepSpeed engine / EMATeacher / DDP wrapper."""
    while not isinstance(model, JointModel):
        inner = getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"expected a JointModel (or a wrapper with .module), got {type(model).__name__}")
        model = inner
    return model
