"""The data2vec training objective: masking, the student task, targets, loss, alignment, collapse guard, FLOPs."""

from unimodal_free.objective.collapse import check_collapse
from unimodal_free.objective.flops import step_flops
from unimodal_free.objective.masking import make_all_views
from unimodal_free.objective.task import Data2VecStudent, LossOutput

__all__ = ["Data2VecStudent", "LossOutput", "make_all_views", "check_collapse", "step_flops"]
