"""Losses: pure functions from tensors to a :class:`LossOutput`. They never run a model, call
backward, log, or read global state."""

from .a2c import a2c
from .base import LossInputs, LossOutput, LossParams
from .feedback import FeedbackInputs, FeedbackParams, conditional_nll, selm
from .offline import a_lol, a_lol_kl, a_lol_ref_free, a_lol_seq, nll, r_gold, r_lol, wbc
from .ppo import policy_loss, value_loss
from .preference import dpo, pro
from .reward_model import reward_model

__all__ = ["FeedbackInputs", "FeedbackParams", "LossInputs", "LossOutput", "LossParams", "conditional_nll", "selm",
           "a2c", "a_lol", "a_lol_kl", "a_lol_ref_free", "a_lol_seq", "dpo", "nll", "policy_loss", "pro",
           "r_gold", "r_lol", "reward_model", "value_loss", "wbc"]
