"""The one table of training algorithms: name → loss function and what its batches need.

Adding an algorithm is one loss function plus one row here; the training loop reads the row and
never branches on the algorithm's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import LolkitError


def _load_causal_lm(cfg, *, device=None):
    from .models import load_model

    # an encoder–decoder policy (T5, BART) trains here too: forward_logprobs feeds it the same batches
    return load_model(cfg.model, trainable=True, device=device, seq2seq=True)


def _logprob_forward(model, batch):
    from .logprobs import forward_logprobs
    from .losses import LossInputs

    seq, tokens, _ = forward_logprobs(model, batch)
    return LossInputs(seq, tokens, batch.response_mask)


def _load_reward_model(cfg, *, device=None):
    from .reward_model import load_for_training

    return load_for_training(cfg, device=device)


def _reward_forward(model, batch):
    from .reward_model import forward

    return forward(model, batch)


def _pair_validator(cfg, data, tokenizer):
    from .reward_model import PairValidator

    return PairValidator(cfg, data, tokenizer)


@dataclass(frozen=True)
class ModelKind:
    """What a row trains and how a batch goes through it: ``load(cfg, device=…)`` → (model, tokenizer,
    resolved path); ``forward(model, batch)`` → the :class:`~lolkit.losses.LossInputs` the loss reads
    (log-probs of the response tokens, or a reward model's scores)."""

    name: str
    load: Callable
    forward: Callable


CAUSAL_LM = ModelKind("causal_lm", _load_causal_lm, _logprob_forward)
# AutoModelForSequenceClassification with one output, read at the last token that is not padding
REWARD_MODEL = ModelKind("sequence_classifier", _load_reward_model, _reward_forward)


@dataclass(frozen=True)
class Algorithm:
    name: str
    loss: Callable  # (LossInputs, LossParams) -> LossOutput
    records: tuple[str, ...]  # record kinds it trains on
    needs_reward: bool  # every response must carry a reward
    nonnegative_reward: bool  # the loss multiplies by R, so R >= 0 is required
    needs_reference: bool  # reference log-probs from the cached reference pass
    needs_advantage: bool  # advantages from the value estimate
    summary: str
    token_reference: bool = False  # per-token reference log-probs as well
    # what one batch item is: best | all (one response), pair (DPO: chosen/rejected, or a ranking's best/worst),
    # pairs (every ordered pair of a ranking), ranking (PRO)
    unit: str = "best"
    model: ModelKind = CAUSAL_LM
    # (cfg, data, tokenizer) -> validator (metric, better, enabled, run); None: the loop's reward / NLL validator
    validator: Callable | None = None


def _table() -> dict[str, Algorithm]:
    from . import losses

    any_kind = ("response", "preference", "ranking")
    rows = [
        # name, loss, record kinds, needs reward, needs R >= 0, needs reference, needs advantage, summary
        Algorithm("nll", losses.nll, any_kind, False, False, False, False,
                  "negative log-likelihood of the responses (behaviour cloning)"),
        Algorithm("wbc", losses.wbc, any_kind, True, True, False, False,
                  "reward-weighted behaviour cloning: R · ℓ_θ"),
        Algorithm("r_gold", losses.r_gold, any_kind, True, True, False, False,
                  "reward GOLD: R · Σ_t max(π_θ(y_t), u) · (−log π_θ(y_t))"),
        Algorithm("r_lol", losses.r_lol, any_kind, True, True, True, False,
                  "reward LoL: R · clip(ρ) · ℓ_θ"),
        Algorithm("a_lol", losses.a_lol, any_kind, True, False, True, True,
                  "advantage LoL: A⁺ · clip(ρ) · ℓ_θ"),
        Algorithm("a_lol_ref_free", losses.a_lol_ref_free, any_kind, True, False, False, True,
                  "reference-free A-LoL: A⁺ · ℓ_θ"),
        Algorithm("a_lol_seq", losses.a_lol_seq, any_kind, True, False, True, True,
                  "A-LoL with per-token ratios: A⁺ · Σ_t clip(r_t) · (−log π_θ(y_t))", token_reference=True),
        Algorithm("a_lol_kl", losses.a_lol_kl, any_kind, True, False, True, True,
                  "A-LoL with a KL term instead of the ratio: A⁺ · ℓ_θ + β(ℓ_ref − ℓ_θ)"),
        Algorithm("dpo", losses.dpo, ("preference", "ranking"), False, False, True, False,
                  "DPO: −log σ(β Δ) over (chosen, rejected) pairs (sigmoid / ipo / label smoothing / reference-free)",
                  unit="pair"),
        Algorithm("pro", losses.pro, ("ranking", "preference"), True, False, False, False,
                  "PRO: listwise ranking of the candidates by reward + sft_weight · (n−1)² · ℓ_θ(best)",
                  unit="ranking"),
        Algorithm("rm", losses.reward_model, ("preference", "ranking"), False, False, False, False,
                  "reward model: −log σ(r(x, y_c) − r(x, y_r) − m) [+ c·(r_c + r_r)²] over pairs (rankings: all pairs)",
                  unit="pairs", model=REWARD_MODEL, validator=_pair_validator),
    ]
    return {a.name: a for a in rows}


# Online algorithms have their own loop (lolkit.online): rollouts, rewards and PPO updates, no offline
# loss row. train() dispatches on is_online() before touching the offline table.
ONLINE = {
    "ppo": "PPO on a token-level MDP: per-token KL penalty, GAE, clipped policy + value loss, adaptive KL",
    "nlpo": "NLPO: PPO with actions masked to the top-p nucleus of a periodically refreshed mask policy",
}


def is_online(name: str) -> bool:
    return name in ONLINE


# Learning from feedback (lolkit.feedback): an iterative driver — sample, get feedback, update a data
# pool, train — with its own losses (lolkit.losses.feedback). train() dispatches on is_iterative().
FEEDBACK = {
    "quark": "Quark: reward-quantile control tokens, balanced data pool, NLL − η·entropy + β·KL to the reference",
    "alt_rm": "ALT-RM: Quark with the quantiles as words (Excellent. … Horrible.) in the input",
    "alt_lmu": "ALT-LMU: free-text feedback + score (critic model, rule or file) as the condition",
    "alt_lmc": "ALT-LMC: a feedback category (critic model, rule or file) as the condition",
    "selm": "SELM: iterative online DPO on {greedy answer, dataset candidates} + α·β optimism term",
}


def is_iterative(name: str) -> bool:
    return name in FEEDBACK


def get_algorithm(name: str) -> Algorithm:
    table = _table()
    if name not in table:
        raise LolkitError(f"unknown algorithm {name!r} (available: {', '.join([*table, *ONLINE, *FEEDBACK])})")
    return table[name]


def names() -> list[str]:
    return list(_table())
