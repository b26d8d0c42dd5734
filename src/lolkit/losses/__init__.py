"""Losses: pure functions from tensors to a :class:`LossOutput`. They never run a model, call
backward, log, or read global state."""

from .base import LossInputs, LossOutput, LossParams
from .offline import nll

__all__ = ["LossInputs", "LossOutput", "LossParams", "nll"]
