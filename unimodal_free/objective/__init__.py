"""data2vec objective in a Perceiver: targets, loss, alignment, collapse guard, FLOPs."""

from unimodal_free.model.pooling import pooled_embedding
from unimodal_free.objective.collapse import check_collapse
from unimodal_free.objective.flops import step_flops
from unimodal_free.objective.loss import LossOutput, compute_loss, make_all_views

__all__ = ["LossOutput", "compute_loss", "make_all_views", "check_collapse", "pooled_embedding", "step_flops"]
