"""The one table of every algorithm lolkit trains: offline, reward model, online, feedback and CoLA's stages.

Each row names the loop that runs it, the config section it reads, the record kinds it takes and what it
needs; the offline rows add their loss and what their batches carry. Adding an algorithm is one loss
function plus one row here. The loops read the row and never branch on an algorithm's name; the CLI's
``--algo`` help, the demo's list and the README's algorithm table are made from it (tests check the
README against :func:`markdown_table`).

Importing this module is cheap (no torch): a row's loss is resolved when used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .conditions import FeedbackCategory, FeedbackText, QuantileToken, QuantileWord
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


def _pair_validator(cfg, data, tokenizer, reward=None):
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

# loop → (how it is started, the config section of its own settings); lolkit.train.train dispatches on it
LOOPS = {
    "offline": ("lolkit train --algo NAME", "algo"),
    "online": ("lolkit train --algo NAME", "ppo"),
    "feedback": ("lolkit train --algo NAME", "feedback"),
    "cola": ("lolkit cola STAGE", "options of `lolkit cola STAGE`"),
}
ANY_RECORD = ("response", "preference", "ranking")


@dataclass(frozen=True)
class Algorithm:
    name: str
    loop: str  # a key of LOOPS
    records: tuple[str, ...]  # record kinds it trains on (online / feedback / CoLA: it reads their prompts or text)
    objective: str  # what it optimises, for the README (Markdown)
    needs: str  # what it needs, for the README
    # -- offline rows: the loss and what a batch carries --------------------------------------------------
    loss_name: str | None = None  # the loss function's name in lolkit.losses
    needs_reward: bool = False  # every response must carry a reward
    nonnegative_reward: bool = False  # the loss multiplies by R, so R >= 0 is required
    needs_reference: bool = False  # reference log-probs from the cached reference pass
    needs_advantage: bool = False  # advantages from the value estimate
    token_reference: bool = False  # per-token reference log-probs as well
    # what one batch item is: best | all (one response), pair (DPO: chosen/rejected, or a ranking's best/worst),
    # pairs (every ordered pair of a ranking), ranking (PRO)
    unit: str = "best"
    model: ModelKind = CAUSAL_LM
    # (cfg, data, tokenizer, reward) -> validator (metric, better, enabled, run); None: the loop's own
    validator: Callable | None = None
    demo: bool = False  # trained and compared by `lolkit demo`
    # -- online rows ---------------------------------------------------------------------------------------
    action_mask: bool = False  # NLPO: actions restricted to a mask policy's top-p nucleus
    update: str | None = None  # the rollout's update: a key of lolkit.online.updates.UPDATES
    policy_lr: bool = True  # False: the policy step has no learning rate (TRPO), so --lr / optim.lr is refused
    # -- feedback rows -------------------------------------------------------------------------------------
    condition: type | None = None  # what samples are conditioned on (lolkit.conditions)
    preference_pairs: bool = False  # SELM: the pool holds (chosen, rejected, y_ref) of each prompt instead
    # -- CoLA rows -----------------------------------------------------------------------------------------
    stage: str | None = None  # `lolkit cola STAGE`

    @property
    def loss(self) -> Callable:
        """The loss function (imports torch: resolved on first use)."""
        from . import losses

        return getattr(losses, self.loss_name)

    @property
    def command(self) -> str:
        return LOOPS[self.loop][0].replace("NAME", self.name).replace("STAGE", self.stage or "")

    @property
    def section(self) -> str:
        return LOOPS[self.loop][1]


_PROMPTS = "prompts, reward"
TABLE: tuple[Algorithm, ...] = (
    # -- offline, reward-based (spec §1) ----------------------------------------------------------------------
    Algorithm("nll", "offline", ANY_RECORD, "ℓ_θ", "—", "nll", demo=True),
    Algorithm("wbc", "offline", ANY_RECORD, "R · ℓ_θ", "reward ≥ 0", "wbc", needs_reward=True,
              nonnegative_reward=True, demo=True),
    Algorithm("r_gold", "offline", ANY_RECORD, "R · Σ_t max(π_θ(y_t), u) · (−log π_θ(y_t)), u = 0.1", "reward ≥ 0",
              "r_gold", needs_reward=True, nonnegative_reward=True, demo=True),
    Algorithm("r_lol", "offline", ANY_RECORD, "R · clip(ρ) · ℓ_θ", "reward ≥ 0, reference", "r_lol",
              needs_reward=True, nonnegative_reward=True, needs_reference=True, demo=True),
    Algorithm("a_lol", "offline", ANY_RECORD, "A⁺ · clip(ρ) · ℓ_θ", "reward, reference, value", "a_lol",
              needs_reward=True, needs_reference=True, needs_advantage=True, demo=True),
    Algorithm("a_lol_ref_free", "offline", ANY_RECORD, "A⁺ · ℓ_θ", "reward, value", "a_lol_ref_free",
              needs_reward=True, needs_advantage=True, demo=True),
    Algorithm("a_lol_seq", "offline", ANY_RECORD, "A⁺ · Σ_t clip(r_t) · (−log π_θ(y_t)), r_t the per-token ratio",
              "reward, reference, value", "a_lol_seq", needs_reward=True, needs_reference=True,
              needs_advantage=True, token_reference=True, demo=True),
    Algorithm("a_lol_kl", "offline", ANY_RECORD, "A⁺ · ℓ_θ + β(ℓ_ref − ℓ_θ), `--kl-beta β` (0.1)",
              "reward, reference, value", "a_lol_kl", needs_reward=True, needs_reference=True, needs_advantage=True,
              demo=True),
    # -- preferences and rankings (spec §2) --------------------------------------------------------------------
    Algorithm("dpo", "offline", ("preference", "ranking"),
              "−log σ(βΔ), Δ = chosen log-ratio − rejected log-ratio; `algo.dpo_loss=ipo`, `algo.label_smoothing`, "
              "`algo.reference_free`, `algo.beta` (0.1)",
              "preference pairs (or rankings: best vs worst), reference", "dpo", needs_reference=True, unit="pair",
              demo=True),
    Algorithm("pro", "offline", ("ranking", "preference"),
              "Σ_k −log softmax over ranks k..n of reward-gap-weighted, length-normalised log-probs + "
              "`algo.sft_weight` (0.05) · (n−1)² · ℓ_θ(best)", "rankings with rewards", "pro", needs_reward=True,
              unit="ranking", demo=True),
    Algorithm("rm", "offline", ("preference", "ranking"),
              "trains a **reward model** r(x, y) (a sequence classifier with one output): −log σ(r(x, y_c) − r(x, y_r) "
              "− m) + c·(r_c + r_r)², m = the pair's `margin` (0 without), c = `algo.center_rewards_coefficient` "
              "(none by default)", "preference pairs (or rankings: every pair with different rewards)",
              "reward_model", unit="pairs", model=REWARD_MODEL, validator=_pair_validator),
    # -- online (spec §3) ----------------------------------------------------------------------------------------
    Algorithm("ppo", "online", ANY_RECORD,
              "per token −min(ρ_t A_t, clip(ρ_t, 1±0.2) A_t) + c_v (V − R_t)² − c_ent H_t on rollouts; rewards "
              "−β_kl log(π_old/π_ref) per token + R at the last, GAE, adaptive β_kl ([docs/online.md](docs/online.md))",
              _PROMPTS, update="ppo"),
    Algorithm("nlpo", "online", ANY_RECORD,
              "as `ppo`, each action restricted to the top-p nucleus of a mask policy refreshed every "
              "`ppo.mask_update_every` rollouts", _PROMPTS, action_mask=True, update="ppo"),
    Algorithm("a2c", "online", ANY_RECORD,
              "per token −A_t log π_θ(a_t) + c_v (V − R_t)² − c_ent H_t, one update per rollout (no ratio, no "
              "clipping), RMSprop (`a2c.*`); rewards, GAE and adaptive β_kl as `ppo`", _PROMPTS, update="a2c"),
    Algorithm("trpo", "online", ANY_RECORD,
              "max mean_t ρ_t A_t s.t. KL(π_θ ‖ π_old) ≤ δ: conjugate-gradient natural step + line search over the "
              "trainable parameters, value function fitted apart (`trpo.*`); rewards as `ppo`", _PROMPTS,
              update="trpo", policy_lr=False),
    # -- learning from feedback (spec §3) --------------------------------------------------------------------
    Algorithm("quark", "feedback", ANY_RECORD,
              "iterative: per token −log π_θ(y_t\\|c, x) − η·H_t + β·KL(π_ref ‖ π_θ)_t, c = reward-quantile control "
              "token, η 0.06, β 0.05 ([docs/feedback.md](docs/feedback.md))", _PROMPTS, condition=QuantileToken),
    Algorithm("alt_rm", "feedback", ANY_RECORD, "as `quark`, c = the quantile as a word (\"Excellent.\" … \"Horrible.\")",
              _PROMPTS, condition=QuantileWord),
    Algorithm("alt_lmu", "feedback", ANY_RECORD,
              "as `quark`, c = free-text feedback + score from a critic model, a rule or a human-feedback file",
              "prompts; reward for `provider=rule`", condition=FeedbackText),
    Algorithm("alt_lmc", "feedback", ANY_RECORD,
              "as `quark`, c = a category from a critic model, a rule or a human-feedback file",
              "prompts; reward for `provider=rule`", condition=FeedbackCategory),
    Algorithm("selm", "feedback", ANY_RECORD,
              "iterative: DPO(best, worst of {greedy y_ref, dataset candidates}) + α·β·(log p_θ − log p_ref)(y_ref), "
              "β 0.01, α 1e-3, π_ref = previous iteration", "prompts with candidate responses, reward",
              preference_pairs=True),
    # -- latent actions, CoLA (spec §4) ------------------------------------------------------------------------
    Algorithm("cola_world", "cola", ANY_RECORD + ("text",),
              "inverse-dynamics model + world model over a frozen LM: next-token NLL through the frozen LM head "
              "+ λ(ln K − H(p̄)) ([docs/cola.md](docs/cola.md))", "a corpus", stage="world"),
    Algorithm("cola_bc", "cola", ANY_RECORD + ("text",),
              "the latent policy behaviour-cloned on the IDM's actions: cross-entropy", "a `cola world` run",
              stage="bc"),
    Algorithm("cola_rl", "cola", ANY_RECORD,
              "the latent policy only: clipped PPO with a group baseline and a KL penalty to the BC policy",
              "a `cola bc` run, prompts, reward", stage="rl"),
)
_BY_NAME = {a.name: a for a in TABLE}


def get_algorithm(name: str) -> Algorithm:
    if name not in _BY_NAME:
        raise LolkitError(f"unknown algorithm {name!r} (available: {', '.join(train_names())})")
    return _BY_NAME[name]


def names(loop: str | None = None) -> list[str]:
    """Every algorithm's name (or one loop's), in table order."""
    return [a.name for a in TABLE if loop is None or a.loop == loop]


def train_names() -> list[str]:
    """What ``lolkit train --algo`` accepts (CoLA's stages have their own commands)."""
    return [a.name for a in TABLE if a.command.startswith("lolkit train")]


def demo_names() -> tuple[str, ...]:
    return tuple(a.name for a in TABLE if a.demo)


def algo_help() -> str:
    """The ``--algo`` list of ``lolkit train --help``, by loop."""
    what = {"offline": "offline: rewards, preferences, rankings, a reward model",
            "online": "online, with --reward and `--set ppo.*` (a2c: also `a2c.*`, trpo: `trpo.*`)",
            "feedback": "iterative learning from feedback, `--set feedback.*`"}
    return "; ".join(f"{', '.join(names(loop))} ({what[loop]})" for loop in what)


def markdown_table() -> str:
    """The README's algorithm table."""
    lines = ["| algorithm | loop | what it optimises | needs |", "|---|---|---|---|"]
    for a in TABLE:
        shown = f"`{a.name}`" if a.stage is None else f"`cola {a.stage}`"
        lines.append(f"| {shown} | {a.loop} | {a.objective} | {a.needs} |")
    return "\n".join(lines) + "\n"
