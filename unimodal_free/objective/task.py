"""The data2vec training task: the one module the DeepSpeed engine wraps.

One step in named phases (as MAE's ``forward_encoder/forward_decoder/
forward_loss`` and dinov2's ``SSLMetaArch``), all inside ``forward``:

    views      R block-masked views of every row             objective/masking.py
    targets    one teacher pass over the full input          objective/targets.py
    student    the views through encoder + predictor/readout :meth:`Data2VecStudent.forward_student`
    alignment  InfoNCE between pooled student latents        :meth:`Data2VecStudent.forward_alignment`
    cross      pooled student latents -> the paired
               modalities' pooled teacher latents            :meth:`Data2VecStudent.forward_cross`
    loss       regression, balanced over modalities and
               ranks, plus the collapse statistics           :meth:`Data2VecStudent.forward_loss`

Why a subclass of :class:`~unimodal_free.model.joint.JointModel` and not a
module that holds one: the task adds no module of its own, so its state-dict
keys are the model's (``embed.*``, ``encoder.*``, ``align.*``: checkpoints,
exports and model folders load into the plain model as before), and every
parameter is used inside a module forward of the engine-wrapped module (what
ZeRO-3's gathering needs). The teacher (passed in, never registered) runs
inside the same forward, without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from unimodal_free.batch import Batch, ModalitySpec, Rows, split_rows
from unimodal_free.model.joint import JointModel, unwrap
from unimodal_free.objective.alignment import alignment_loss, momentum_keys, pair_index_tensors
from unimodal_free.objective.collapse import row_moments, std_from_moments
from unimodal_free.objective.loss import modality_balanced_loss, regression_error
from unimodal_free.objective.masking import MaskedView, make_all_views
from unimodal_free.objective.negative_queue import NegativeQueue
from unimodal_free.objective.targets import pooled_targets, teacher_layers, teacher_targets


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, what the optimizer minimises
    metrics: dict[str, torch.Tensor]  # detached scalars (see Data2VecStudent.forward)
    # "target/{m}", "pred/{m}": row_moments vectors (1 + 2F,) float64, for the collapse guard's pooled std.
    moments: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StudentOutput:
    predictions: dict[str, torch.Tensor]  # present modalities; latents: (B_m*R, N, D); elements: (B_m*R, T, D)
    latents: dict[str, torch.Tensor]  # final latents (B_m*R, N, D) of every modality (absent ones: 0 rows)
    # Exactly 0.0, with a graph through every parameter of the modalities absent from the batch:
    # the loss adds it so those parameters get a (zero) gradient too (see Data2VecStudent.forward_student).
    absent_term: torch.Tensor


class Data2VecStudent(JointModel):
    """The student: a :class:`JointModel` whose ``forward`` is one training step's loss.

    ``objective_cfg`` / ``masking_cfg``: the ``objective`` and ``masking``
    config sections (the model keeps no whole Config).
    """

    def __init__(self, model_cfg, objective_cfg, masking_cfg, specs: dict[str, ModalitySpec]):
        super().__init__(model_cfg, objective_cfg, specs)
        self.objective_cfg = objective_cfg
        self.masking_cfg = masking_cfg
        # Training state outside the module tree: no parameter, buffer or state-dict key (see negative_queue).
        self.negative_queue = NegativeQueue(objective_cfg.negative_queue) if objective_cfg.negative_queue else None

    def forward(self, batch: Batch, teacher: nn.Module, generator: torch.Generator | None, gather_fn=None,
                sum_fn=None, views: dict[str, MaskedView] | None = None) -> LossOutput:
        """data2vec loss of the R masked views against one teacher pass, plus optional alignment.

        Each modality's loss is its mean over its predicted positions on all
        ranks, and the data2vec loss their ``objective.modality_weights`` mean
        (:func:`~unimodal_free.objective.loss.modality_balanced_loss`).
        Metrics: ``loss/{m}``, ``target_std/{m}``, ``pred_std/{m}``,
        ``masked_fraction/{m}``, ``padding_fraction``, ``loss/data2vec``,
        ``align_loss`` and (alignment on) ``temperature``. ``teacher``: the
        EMA teacher's module (or a wrapper). ``gather_fn`` (negatives) and
        ``sum_fn`` (normalisation statistics, and the per-modality counts of
        the data2vec loss): the cross-rank collectives, see
        :mod:`unimodal_free.objective.alignment`. ``views``: the masked views
        to use instead of drawing them from ``generator`` (the same masks
        split over ranks or held by one process).
        """
        if not batch.parts:
            raise ValueError("student forward: the batch has no rows")
        if views is None:
            views = make_all_views(batch, self.masking_cfg, self.objective_cfg.num_views, generator)
        teacher = unwrap(teacher)
        layers = teacher_layers(teacher, batch)
        targets = teacher_targets(teacher, batch, views, self.objective_cfg, layers)
        student = self.forward_student(views)
        keys = momentum_keys(teacher, layers[-1], batch.parts, self.modalities) if self.negative_queue else None
        align_loss, scale = self.forward_alignment(batch, views, student.latents, gather_fn, sum_fn, keys)
        cross_loss = None
        if self.cross_predictor is not None:
            cross_loss = self.forward_cross(batch, views, student.latents,
                                            pooled_targets(teacher, layers, batch, self.modalities))
        return self.forward_loss(batch, views, targets, student, align_loss, scale, sum_fn, cross_loss)

    def every_modality(self, parts: dict[str, Rows]) -> dict[str, Rows]:
        """``parts`` in the model's modality order, a zero-row input for each modality it lacks.

        The same modules run the same number of times in the same order on
        every rank, only sizes differ: gradients become ready in the same
        order everywhere (ZeRO-1/2 fill their buckets in that order) and
        ZeRO-3 gathers the same parameters (its prefetch follows the trace).
        """
        if list(parts) != [name for name in self.modalities if name in parts]:
            raise ValueError(f"student forward: modalities {list(parts)} are not in the model's order {self.modalities}")
        device = next(iter(parts.values())).coords.device
        return {name: parts[name] if name in parts else self.embed.adapters[name].empty_input(device)
                for name in self.modalities}

    def forward_student(self, views: dict[str, MaskedView]) -> StudentOutput:
        """Student pass over the masked views of every modality present (in the model's modality order).

        Same parameter set every call: a modality absent from ``views`` runs
        through the student as a zero-row input and ``absent_term`` (the sum
        of its empty outputs, exactly 0.0) ties it to the loss. So every
        parameter gets a gradient every step on every rank, zero for what the
        batch does not hold: data-parallel ranks whose batches hold different
        modalities reduce the same gradients (DeepSpeed ZeRO 1/2 bucket a
        parameter when its gradient arrives; a missing one misaligns the
        buckets across ranks). Every parameter is still used inside its own
        module's forward, so ZeRO-3 gathers it as usual.
        """
        absent = [name for name in self.modalities if name not in views]
        parts = self.every_modality(views)
        z = self.final(parts)  # (sum B_m R, N, D); absent modalities have 0 rows
        latents = split_rows(z, parts)  # {m: (B_m R, N, D)}
        if self.predictor is not None:
            outputs = split_rows(self.predictor(z), parts)  # (sum B_m R, N, D): one call for all modalities
        else:
            query = {name: v.target_coords for name, v in views.items()} | {name: parts[name].coords for name in absent}
            outputs = {name: self.head(self.readout(name, latents[name], query[name]))
                       for name in parts}  # (B_m R, T, D)
        predictions = {name: outputs[name] for name in views}
        absent_term = sum((outputs[name].float().sum() for name in absent), z.new_zeros((), dtype=torch.float32))
        return StudentOutput(predictions, latents, absent_term)

    def forward_alignment(self, batch: Batch, views: dict[str, MaskedView], latents: dict[str, torch.Tensor],
                          gather_fn=None, sum_fn=None, keys: dict[str, torch.Tensor] | None = None
                          ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(InfoNCE loss, logit scale) of the pooled student latents; (None, None) with alignment off.

        ``objective.align_input``: "masked" pools the views' final
        ``latents`` (no extra compute), "full" runs the student once more on
        the unmasked rows (see :mod:`unimodal_free.objective.alignment`). ``keys``
        (``objective.negative_queue``): the teacher's :func:`momentum_keys`, scored against
        instead of the paired student rows, with the queue's as more negatives.
        """
        if self.align is None:
            return None, None
        if self.objective_cfg.align_input == "full":
            full = self.every_modality(batch.parts)
            pooled = split_rows(self.final(full).mean(1), full)  # (sum B_m, D) -> {m: (B_m, D)}
        else:
            pooled = pool_views(views, latents)
        pair_rows = pair_index_tensors(batch.parts, self.modalities, next(iter(pooled.values())).device)
        return alignment_loss(self.align, pooled, pair_rows, self.modalities, gather_fn, sum_fn,
                              self.objective_cfg.hard_negatives, self.negative_queue, keys)

    def forward_cross(self, batch: Batch, views: dict[str, MaskedView], latents: dict[str, torch.Tensor],
                      targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Regression error of every paired (source, target) modality: the source's pooled student latents
        (its masked views), through the source -> target head, against the target's :func:`pooled_targets`;
        the mean over this rank's (pair, direction)s.

        Every head runs every step (zero rows where a pair is absent), so every rank builds the same graph.
        """
        pooled = pool_views(views, latents)  # {m: (B_m, D)}, every modality
        pair_rows = pair_index_tensors(batch.parts, self.modalities, next(iter(pooled.values())).device)
        total, count = next(iter(pooled.values())).new_zeros((), dtype=torch.float32), 0
        for (a, b), (ia, ib) in pair_rows.items():
            for src, rows_src, dst, rows_dst in ((a, ia, b, ib), (b, ib, a, ia)):
                pred = self.cross_predictor(src, dst, pooled[src][rows_src]).float()  # (P, D)
                total = total + regression_error(pred, targets[dst][rows_dst], self.objective_cfg).sum()
                count += rows_src.shape[0]  # host-known shape: no read back
        return total / max(count, 1)

    def forward_loss(self, batch: Batch, views: dict[str, MaskedView], targets: dict[str, torch.Tensor],
                     student: StudentOutput, align_loss: torch.Tensor | None, scale: torch.Tensor | None,
                     sum_fn=None, cross_loss: torch.Tensor | None = None) -> LossOutput:
        """Regression of the predictions on the targets, the collapse statistics and the metrics."""
        obj = self.objective_cfg
        metrics: dict[str, torch.Tensor] = {}
        sums, counts = {}, {}
        moments: dict[str, torch.Tensor] = {}
        for name, v in views.items():
            pred, target = student.predictions[name].float(), targets[name]
            valid = None if obj.target_space == "latents" else ~v.target_padding  # (B*R, T)
            err = regression_error(pred, target, obj)  # (B*R, N or T)
            if valid is None:
                sums[name], counts[name] = err.sum(), torch.tensor(err.numel(), device=err.device)
            else:
                sums[name], counts[name] = (err * valid).sum(), valid.sum()
            loss_m = sums[name] / counts[name].clamp(min=1)  # this rank's mean
            metrics[f"loss/{name}"] = loss_m.detach()
            first_view = target[:: v.num_views] if valid is None else target  # latents targets repeat per view
            moments[f"target/{name}"] = row_moments(first_view, valid)
            moments[f"pred/{name}"] = row_moments(pred.detach(), valid)
            rows = first_view.shape[0] if valid is None else sum(n > 0 for n in v.num_targets)  # behind the std
            if rows >= 2:
                metrics[f"target_std/{name}"] = std_from_moments(moments[f"target/{name}"]).float()
                metrics[f"pred_std/{name}"] = std_from_moments(moments[f"pred/{name}"]).float()
            real = (~batch.parts[name].padding).sum() * v.num_views
            metrics[f"masked_fraction/{name}"] = v.mask.sum() / real
        d2v = modality_balanced_loss(sums, counts, self.modalities, obj.modality_weights, sum_fn)
        loss = d2v + student.absent_term  # + 0.0: absent modalities' parameters get a zero gradient
        metrics["loss/data2vec"] = d2v.detach()
        pads = [p.padding for p in batch.parts.values()]
        metrics["padding_fraction"] = sum(p.sum() for p in pads) / max(1, sum(p.numel() for p in pads))  # on device
        if align_loss is not None:
            loss = loss + obj.align_weight * align_loss
            metrics["align_loss"] = align_loss.detach()
            metrics["temperature"] = 1.0 / scale
        else:
            metrics["align_loss"] = torch.zeros((), device=loss.device)
        if cross_loss is not None:
            loss = loss + obj.cross_weight * cross_loss
            metrics["cross_loss"] = cross_loss.detach()
        return LossOutput(loss, metrics, moments)


def pool_views(views: dict[str, MaskedView], latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Student latents (B_m*R, N, D) of the R masked views -> (B_m, D): the mean over views and slots."""
    R = next(iter(views.values())).num_views
    return {name: zm.view(-1, R, *zm.shape[1:]).mean((1, 2)) for name, zm in latents.items()}  # (B_m, D)
