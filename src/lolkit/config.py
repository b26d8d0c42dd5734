"""Run configuration: small dataclasses, YAML in and out, ``a.b=c`` overrides, unknown keys rejected.

Precedence: dataclass defaults < ``--config FILE.yaml`` < ``--set section.key=value`` < CLI flags.
The fully resolved config is written to the run directory as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LolkitError
from .models import ModelConfig


@dataclass
class DataConfig:
    task: str = "colours"  # built-in task used when `train` is not given
    train: str | None = None  # JSONL in the data contract
    val: str | None = None  # JSONL; default: a held-out fraction of the train prompts
    val_fraction: float = 0.05
    # Token lengths examples are cut to. null: from the data (its longest prompt / response + EOS), so
    # nothing is cut unless the model's context is shorter; loops that generate keep the whole prompt
    # up to the context minus the new tokens. A set value is kept (and clamped to the context).
    max_prompt_len: int | None = None
    max_response_len: int | None = None
    truncation: str = "warn"  # what a cut does: warn (count and report) | error (stop) | drop (leave out)
    num_proc: int = 0  # processes tokenising the data (datasets.map); 0: 1 for small files, else up to 8
    shift_rewards: bool = False  # shift all rewards by their minimum when an algorithm needs R >= 0


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adamw8bit
    lr: float | None = None  # None: the loop's default from DEFAULT_LR (never depends on the model)
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0


@dataclass
class AlgoConfig:
    name: str = "nll"
    clip: float | None = 0.9  # ε of the ratio clamp [1−ε, 1+ε]; null/off = no clip
    kl_beta: float = 0.1  # β of a_lol_kl
    gold_u: float = 0.1  # lower bound u of r_gold's token weight
    sampling: str = "none"  # none | good_priority | good_random | all_priority
    value_source: str = "auto"  # reference | data | auto (reference when a reward is set, else data)
    max_reward: float | None = None  # V's range (0, max_reward); default: the reward's maximum, else the data's
    value_epochs: int = 10
    value_lr: float = 1e-5
    value_batch_size: int = 16
    value_holdout: float = 0.1
    value_folds: int = 5  # K of the cross-fitting (value_source data)
    cache_dir: str | None = None  # engine cache; default $LOLKIT_CACHE/engine
    beta: float = 0.1  # DPO's β
    dpo_loss: str = "sigmoid"  # sigmoid | ipo
    label_smoothing: float = 0.0  # cDPO's ε (sigmoid loss only)
    reference_free: bool = False  # DPO without the reference terms
    sft_weight: float = 0.05  # PRO: weight of the best response's NLL
    center_rewards_coefficient: float | None = None  # rm: c of c·(r_c + r_r)² (TRL's name); null: no term


@dataclass
class EvalConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_samples: int = 1  # samples per prompt
    batch_size: int = 32
    max_prompts: int | None = None


@dataclass
class PPOConfig:
    """Online RL (``--algo ppo|nlpo|a2c|trpo``; docs/online.md). One iteration = one rollout of
    ``batch_size`` prompts × ``samples_per_prompt`` then ``epochs`` PPO epochs over it (a2c: one update;
    trpo: one trust-region step; their own settings are in :class:`A2CConfig` / :class:`TRPOConfig`)."""

    samples_per_prompt: int = 1
    max_new_tokens: int = 20
    temperature: float = 1.0
    epochs: int = 4  # PPO epochs per rollout
    minibatch_size: int = 8  # sequences per optimizer step
    clip: float = 0.2  # ε of clip(ρ, 1−ε, 1+ε)
    value_clip: float | None = None  # clip V around the rollout's values; null: no value clipping
    vf_coef: float = 0.5  # c_v
    ent_coef: float = 0.0  # c_ent
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    kl_beta: float = 0.05  # initial β_kl of the per-token KL penalty
    kl_target: float | None = 0.5  # adaptive controller's target; null: fixed β_kl
    kl_horizon_factor: float = 0.1  # β ← β(1 + factor·e)
    reward_scale: float = 1.0  # R ← scale · R (after normalisation)
    reward_norm: str = "none"  # none | batch (whiten R over the rollout) | running (running mean/std)
    reward_clip: float | None = None  # clip R to [−c, c] after scaling
    critic: str = "shared"  # shared (value head on the policy trunk) | separate (a copy of the model)
    top_p: float = 0.9  # NLPO: nucleus of the mask policy
    mask_update_every: int = 5  # NLPO: rollouts between refreshes of the mask policy
    mask_model: str | None = None  # NLPO: the mask policy's initial weights (the policy's architecture); null: the policy's
    rollout_samples: int = 8  # rows per iteration written to rollouts.jsonl (0: all)


@dataclass
class A2CConfig:
    """``--algo a2c`` (docs/online.md): one update per rollout over all of it, with RL4LMs' (stable-baselines3's)
    optimizer. Rollouts, rewards, KL penalty, GAE, c_v and c_ent come from the ``ppo`` section."""

    optimizer: str = "rmsprop"  # rmsprop (RL4LMs' default: RMSprop(alpha, eps), lr = optim.lr) | adamw (the optim section)
    alpha: float = 0.99  # RMSprop's smoothing constant
    eps: float = 1e-5  # RMSprop's ε
    whiten_advantages: bool = False  # RL4LMs' A2C: normalize_advantage false


@dataclass
class TRPOConfig:
    """``--algo trpo`` (docs/online.md; stable-baselines3-contrib's defaults): a natural-gradient policy step,
    then a value function fitted on its own. The policy step has no learning rate: optim.lr is the value
    function's and is set from ``value_lr`` (giving --lr is an error)."""

    target_kl: float = 0.01  # δ: the trust region's KL bound
    cg_max_steps: int = 15
    cg_damping: float = 0.1
    line_search_shrink: float = 0.8
    line_search_max_iter: int = 10
    value_lr: float = 1e-3  # the value function's learning rate (AdamW of the optim section)
    value_epochs: int = 10  # passes of the value fit over the rollout (minibatches of ppo.minibatch_size)
    whiten_advantages: bool = True  # stable-baselines3-contrib: normalize_advantage true


@dataclass
class FeedbackConfig:
    """Learning from feedback (``--algo quark|alt_rm|alt_lmu|alt_lmc|selm``; docs/feedback.md). One
    iteration = sample → feedback → data pool → ``steps`` optimizer steps of ``batch_size``."""

    iterations: int = 4
    steps: int = 20  # optimizer steps per iteration
    prompts_per_iteration: int = 0  # 0: every prompt (quark/alt); selm: the slice size, 0 = prompts / iterations
    samples_per_prompt: int = 4  # quark/alt: k samples per prompt
    max_new_tokens: int = 16
    temperature: float = 1.0
    quantiles: int = 5  # quark, alt_rm, alt_lmu: reward (score) quantiles
    binning: str = "per_prompt"  # per_prompt | global
    words: list[str] = field(default_factory=lambda: ["Excellent.", "Good.", "Mediocre.", "Bad.", "Horrible."])
    categories: list[str] = field(default_factory=lambda: ["good", "fair", "bad"])  # alt_lmc, best first
    flush_factor: float = 0.0  # pool keeps the newest flush_factor × one iteration's samples; 0: keeps all
    quota: int | None = None  # at most this many per bin and prompt (default: the smallest bin's size)
    eta: float = 0.06  # entropy bonus η
    kl_beta: float = 0.05  # β of KL(π_ref ‖ π_θ); 0: no KL term, no reference model
    provider: str = "rule"  # alt_lmu / alt_lmc feedback: rule | model | file
    critic_model: str = "smollm2"  # provider model: the instruction model prompted as a critic
    critic_max_new_tokens: int = 40
    file: str | None = None  # provider file: JSONL of human feedback {prompt, response, feedback, score|category}
    selm_alpha: float = 1e-3  # α of SELM's optimism term (0: DPO)
    selm_beta: float = 0.01  # β of SELM's DPO term


@dataclass
class TrainConfig:
    output_dir: str | None = None  # default: runs/<algo>-<data>-seed<seed>
    seed: int = 0
    batch_size: int = 8  # examples per optimizer step (all processes together)
    micro_batch_size: int | None = None  # examples per forward pass; default: batch_size
    max_steps: int | None = None  # default: epochs × steps per epoch
    epochs: float = 1.0
    eval_every: int = 0  # optimizer steps between validation runs; 0: only at the end
    eval_prompts: int = 64  # validation prompts scored each time
    save_every: int = 50  # optimizer steps between checkpoints (for --resume)
    save_total_limit: int = 2  # step checkpoints kept besides the best one
    reward: str | None = None  # reward for validation; default: the built-in task's reward
    report_to: list[str] = field(default_factory=list)  # trackers: tensorboard, wandb, mlflow, trackio (tracking.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or value is False or str(value).lower() in ("none", "null", "off")):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except LolkitError as e:
                errors.append(str(e))
        raise LolkitError(errors[0] if errors else f"config key '{key}': invalid value {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise LolkitError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value] if args else value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise LolkitError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise LolkitError(f"config key '{key}': expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise LolkitError(f"config key '{key}': expected an integer, got {value!r}") from None
        if f != int(f):
            raise LolkitError(f"config key '{key}': expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise LolkitError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise LolkitError(f"config key '{key}': expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise LolkitError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise LolkitError(f"unknown config key '{full}'{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LolkitError(f"config key '{full}': expected a section (mapping), got {value!r}")
            _apply(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_overrides(items: list[str]) -> dict:
    """``["optim.lr=1e-4", "model.lora=true"]`` → nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise LolkitError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise LolkitError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise LolkitError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise LolkitError(f"{p}: expected a mapping at the top level")
    return data


def build(cls: type, *layers: dict, source: str = "") -> Any:
    """Instantiate ``cls`` and apply each layer of (nested) settings in order."""
    cfg = cls()
    for layer in layers:
        try:
            _apply(cfg, layer)
        except LolkitError as e:
            raise LolkitError(f"{source}: {e}" if source else str(e)) from None
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


SCHEDULERS = ("cosine", "linear", "constant")
TRUNCATION = ("warn", "error", "drop")
OPTIMIZERS = ("adamw", "adamw8bit")

# The learning rate when none is given: one table for every loop and CoLA stage, (full fine-tuning, LoRA /
# QLoRA; None where there is no adapter). It never depends on the model (a run continued from a tiny model's
# final/ trains at the same rate as one from a 7B model); `--help` shows it and run.json / config.yaml record
# the value used. CoLA's stages train small modules from scratch over a frozen LM, hence their larger rates.
DEFAULT_LR = {"offline": (1e-5, 2e-4), "online": (1e-6, 1e-4), "feedback": (1e-5, 2e-4),
              "cola_world": (3e-3, None), "cola_bc": (3e-3, None), "cola_rl": (3e-4, None)}


def default_lr(cfg: TrainConfig, loop: str) -> float:
    full, adapter = DEFAULT_LR[loop]
    return adapter if (cfg.model.lora or cfg.model.qlora) else full


def _positive(x: float | None) -> bool:
    import math

    return x is not None and math.isfinite(x) and x > 0


def check_settings(cfg: TrainConfig, checks: list[tuple[bool, str]] = ()) -> None:
    """Raise the first failed ``(ok, message)`` check: the settings every training loop shares first (batch,
    steps, optimizer, scheduler), then the loop's own ``checks``. Called before the run directory exists,
    so a bad setting leaves nothing behind."""
    o = cfg.optim
    shared = [
        (cfg.batch_size >= 1 and cfg.micro_batch_size >= 1, "batch_size and micro_batch_size must be at least 1"),
        (cfg.max_steps is None or cfg.max_steps >= 1, f"max_steps must be at least 1, got {cfg.max_steps}"),
        (_positive(cfg.epochs), f"epochs must be > 0, got {cfg.epochs}"),
        (_positive(o.lr), f"optim.lr (--lr) must be a number > 0, got {o.lr}"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1 and optim.beta2 must be in [0, 1), got {o.beta1}, {o.beta2}"),
        (o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}"),
        (o.max_grad_norm is None or _positive(o.max_grad_norm),
         f"optim.max_grad_norm must be > 0, or null for no clipping (got {o.max_grad_norm})"),
        (cfg.eval_every >= 0 and cfg.save_every >= 0, "eval_every and save_every must be >= 0 (0: only at the end)"),
        (cfg.eval_prompts >= 1, f"eval_prompts must be at least 1, got {cfg.eval_prompts}"),
        (o.scheduler in SCHEDULERS, f"unknown scheduler {o.scheduler!r} ({', '.join(SCHEDULERS)})"),
        (o.optimizer in OPTIMIZERS, f"unknown optimizer {o.optimizer!r} ({', '.join(OPTIMIZERS)})"),
        *[(getattr(cfg.data, k) is None or getattr(cfg.data, k) >= 1,
           f"data.{k} must be at least 1, got {getattr(cfg.data, k)}") for k in ("max_prompt_len", "max_response_len")],
        (cfg.data.truncation in TRUNCATION,
         f"data.truncation must be one of {', '.join(TRUNCATION)}, got {cfg.data.truncation!r}"),
        (cfg.data.num_proc >= 0, f"data.num_proc must be >= 0 (0: automatic), got {cfg.data.num_proc}"),
    ]
    for ok, message in [*shared, *checks]:
        if not ok:
            raise LolkitError(message)
    from .tracking import check_trackers

    check_trackers(cfg.report_to)
