"""The joint Perceiver model: element embedding, encoder, heads, pooling, EMA teacher (no loss, no masking)."""

from unimodal_free.model.joint import JointModel, build_model, unwrap
from unimodal_free.model.pooling import pooled_embedding
from unimodal_free.model.teacher import EMATeacher, ema_schedule

__all__ = ["JointModel", "build_model", "unwrap", "pooled_embedding", "EMATeacher", "ema_schedule"]
