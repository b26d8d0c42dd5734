"""The offline training loop: one explicit loop on Accelerate for every algorithm in the table.

Per optimizer step: take the step's examples (a pure function of seed and step, so a resumed run
sees exactly the batches an uninterrupted one would), split them into micro-batches of similar
length, run the policy once per micro-batch, hand the tensors to the algorithm's loss, and
backpropagate the per-example losses divided by the number of examples in the whole step — which
makes gradient accumulation exact (1 × 8 accumulated == 8 × 1).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .algorithms import Algorithm, get_algorithm
from .checkpoint import ModelWeights
from .config import TrainConfig, check_settings, default_lr, to_dict
from .data.dataset import TrainData, load_train_data
from .data.tokenize import collate, context_window, group_by_length, micro_batches
from .errors import LolkitError
from .io import child_path
from .logprobs import forward_logprobs
from .losses import LossInputs, LossParams
from .models import count_parameters
from .run import Run, make_optimizer, make_scheduler
from .tracking import loss_views


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill in the defaults that depend on other settings, so config.yaml is fully resolved."""
    if cfg.optim.lr is None:
        cfg.optim.lr = default_lr(cfg, "offline")
    if cfg.micro_batch_size is None:
        cfg.micro_batch_size = cfg.batch_size
    if cfg.reward is None and cfg.data.train is None:
        cfg.reward = cfg.data.task
    get_algorithm(cfg.algo.name)
    if cfg.output_dir is None:  # config values become a path: they must not climb out of runs/
        data = Path(cfg.data.train).stem if cfg.data.train else cfg.data.task
        name = f"{cfg.algo.name}-{data}-seed{cfg.seed}"  # the algorithm is checked above, a file stem is safe
        cfg.output_dir = str(child_path("runs", name, f"data.task {cfg.data.task!r}").as_posix())
    check_settings(cfg)
    if cfg.algo.value_source == "auto":
        cfg.algo.value_source = "reference" if cfg.reward else "data"
    from .engine.sampling import STRATEGIES

    if cfg.algo.sampling not in STRATEGIES:
        raise LolkitError(f"unknown sampling strategy {cfg.algo.sampling!r} ({', '.join(STRATEGIES)})")
    if cfg.algo.value_source not in ("reference", "data"):
        raise LolkitError(f"unknown value source {cfg.algo.value_source!r} (reference, data, auto)")
    if cfg.algo.dpo_loss not in ("sigmoid", "ipo"):
        raise LolkitError(f"unknown DPO loss {cfg.algo.dpo_loss!r} (sigmoid, ipo)")
    if get_algorithm(cfg.algo.name).unit in ("pair", "pairs", "ranking") and cfg.algo.sampling != "none":
        raise LolkitError(f"--sampling {cfg.algo.sampling} applies to the offline reward family, not {cfg.algo.name}")
    a = cfg.algo
    checks = [
        (a.clip is None or a.clip >= 0, f"clip must be >= 0, or off for no clip (got {a.clip})"),
        (_finite_positive(a.beta), f"algo.beta (DPO's β) must be > 0, got {a.beta}"),
        (0 <= a.label_smoothing < 0.5, f"algo.label_smoothing must be in [0, 0.5), got {a.label_smoothing}"),
        # IPO has no smoothed form here (TRL ignores the smoothing for it as well): refuse rather than drop it
        (not (a.dpo_loss == "ipo" and a.label_smoothing),
         f"algo.label_smoothing={a.label_smoothing} applies to the sigmoid DPO loss only, not to ipo; set it to 0"),
        (a.kl_beta >= 0 and a.gold_u >= 0 and a.sft_weight >= 0, "algo.kl_beta, algo.gold_u and algo.sft_weight must be >= 0"),
        (a.center_rewards_coefficient is None or (math.isfinite(a.center_rewards_coefficient)
                                                  and a.center_rewards_coefficient >= 0),
         f"algo.center_rewards_coefficient must be >= 0, or null for none (got {a.center_rewards_coefficient})"),
    ]
    for ok, message in checks:
        if not ok:
            raise LolkitError(message)
    return cfg


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def reduce_losses(losses: torch.Tensor, normaliser: float) -> torch.Tensor:
    """The one reduction: per-unit losses summed and divided by the number of units (examples, or
    tokens for token-level algorithms) in the whole optimizer step, across micro-batches."""
    return losses.sum() / normaliser


class StepPlan:
    """Which examples each optimizer step trains on: a pure function of (seed, step)."""

    def __init__(self, lengths: list[int], batch_size: int, micro: int, seed: int, rank: int = 0, world: int = 1,
                 pool: list[int] | None = None, weights: list[float] | None = None):
        self.pool = list(range(len(lengths))) if pool is None else pool
        if len(self.pool) < batch_size:
            raise LolkitError(f"only {len(self.pool)} training examples in the pool for a batch size of {batch_size}")
        from .distributed import check_divisible

        check_divisible(batch_size, world, "batch_size")
        self.lengths, self.batch_size, self.micro, self.weights = lengths, batch_size, micro, weights
        self.seed, self.rank, self.world = seed, rank, world
        self.steps_per_epoch = len(self.pool) // batch_size
        self._cache: tuple[int, list[list[int]]] | None = None

    def epoch_order(self, epoch: int, rng: random.Random) -> list[int]:
        from .engine.sampling import epoch_order

        return epoch_order(self.pool, self.weights, rng)

    def groups(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            rng = random.Random(f"lolkit-{self.seed}-{epoch}")
            self._cache = (epoch, group_by_length(self.epoch_order(epoch, rng), self.lengths, self.batch_size, rng))
        return self._cache[1]

    def step(self, step: int) -> list[list[int]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        group = sorted(self.groups(epoch)[k], key=lambda i: -self.lengths[i])
        return micro_batches(group[self.rank :: self.world], self.lengths, self.micro)


@dataclass
class Validator:
    """Validation: mean reward of greedy generations on the validation prompts (higher is better;
    :class:`lolkit.validation.RewardValidator`), or, without a reward, the mean per-token NLL of the
    validation responses (lower is better)."""

    cfg: TrainConfig
    data: TrainData
    tokenizer: object
    reward: object = None  # built once by the loop (None: no reward, validation by NLL)

    def __post_init__(self) -> None:
        if not self.enabled and self.cfg.data.val:
            raise LolkitError(f"{self.cfg.data.val}: validation without a reward needs records with responses (their "
                              "NLL is the validation metric): pass --reward, or --val-data with records")
        from .validation import RewardValidator

        n, d = self.cfg.eval_prompts, self.data
        self.by_reward = RewardValidator(self.cfg, self.tokenizer, self.reward, d.val_prompts[:n], d.val_raw_prompts[:n],
                                         d.val_unique[:n]) if self.reward is not None else None

    @property
    def enabled(self) -> bool:
        """Validation: the reward of greedy answers, else the NLL of validation responses, else none."""
        return self.reward is not None or any(r.responses for r in self.data.val_records)

    @property
    def metric(self) -> str:
        return "val_reward" if self.reward is not None else "val_nll"

    def better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.reward is not None else a < b)

    def run(self, model) -> dict[str, float]:
        if self.by_reward is not None:
            return self.by_reward.run(model)
        return {"val_nll": self._val_nll(model)}

    @torch.no_grad()
    def _val_nll(self, model) -> float:
        from .data.tokenize import encode_pair

        dev = next(model.parameters()).device
        recs = [r for r in self.data.val_records if r.responses][: self.cfg.eval_prompts]
        from .data.tokenize import render_prompt

        enc = [encode_pair(self.tokenizer, render_prompt(self.tokenizer, r.prompt), r.responses[0],
                           self.cfg.data.max_prompt_len, self.cfg.data.max_response_len) for r in recs]
        total, tokens = 0.0, 0.0
        was = model.training
        model.eval()
        for s in range(0, len(enc), self.cfg.micro_batch_size):
            b = collate(enc[s : s + self.cfg.micro_batch_size], range(s, s + len(enc[s : s + self.cfg.micro_batch_size])),
                        self.tokenizer.pad_token_id).to(dev)
            seq, _, _ = forward_logprobs(model, b)
            total -= seq.sum().item()
            tokens += b.response_mask.sum().item()
        model.train(was)
        return total / max(tokens, 1.0)


def _loss_inputs(algo: Algorithm, data: TrainData, engine, batch, inp: LossInputs, units: list[int]) -> LossInputs:
    """Everything the loss needs for this micro-batch, added to the model's outputs ``inp``; reference and
    advantage values are looked up in the engine's precomputed tensors, never recomputed."""
    dev = batch.input_ids.device
    idx = torch.tensor(batch.indices, dtype=torch.long)
    if algo.needs_reward:
        inp.rewards = torch.tensor([data.examples[i].reward for i in batch.indices], dtype=torch.float32, device=dev)
    if engine.ref_seq is not None and algo.needs_reference:
        inp.ref_logps = engine.ref_seq[idx].to(dev)
        if algo.token_reference:
            inp.ref_token_logps = engine.reference.token_matrix(batch.indices, batch.response_mask)
    if algo.needs_advantage:
        inp.advantages = engine.advantages[idx].to(dev)
    if data.margins is not None:
        inp.margins = torch.tensor([data.margins[u] for u in units], dtype=torch.float32, device=dev)
    return inp


def accumulate_gradients(model, algo: Algorithm, params: LossParams, data: TrainData, engine, micro: list[list[int]],
                         pad_id: int, device, normaliser: float, backward, no_sync):
    """Forward, loss and backward for one optimizer step's micro-batches of units (the whole training
    step but the optimizer update). Returns (summed per-unit metrics as tensors — with the step's response
    tokens under ``response_tokens`` — pad tokens, all tokens)."""
    sums: dict[str, torch.Tensor] = {}
    pad = tokens = 0
    for m, units in enumerate(micro):
        idx = data.rows(units)
        batch = collate([data.examples[i].encoded for i in idx], idx, pad_id).to(device)
        pad, tokens = pad + batch.pad_tokens, tokens + batch.total_tokens
        with contextlib.nullcontext() if m == len(micro) - 1 else no_sync(model):
            out = algo.loss(_loss_inputs(algo, data, engine, batch, algo.model.forward(model, batch), units), params)
            backward(reduce_losses(out.losses, normaliser))
        for k, v in (("loss", out.losses), ("response_tokens", batch.response_mask), *out.metrics.items()):
            v = v.detach().float().sum()
            sums[k] = sums[k] + v if k in sums else v
    return sums, pad, tokens


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    """Train per ``cfg`` with the loop its algorithm's row names; returns the run directory. See the README
    for its layout. A fresh run that fails before its first step leaves no run directory."""
    row = get_algorithm(cfg.algo.name)
    if row.loop == "online":  # PPO / NLPO: rollouts and PPO epochs (lolkit.online)
        from .online.trainer import train as online

        return online(cfg, resume=resume, overwrite=overwrite, quiet=quiet)
    if row.loop == "feedback":  # Quark / ALT / SELM: sample → feedback → pool → train (lolkit.feedback)
        from .feedback.driver import train as feedback

        return feedback(cfg, resume=resume, overwrite=overwrite, quiet=quiet)
    if row.loop != "offline":
        raise LolkitError(f"--algo {row.name} is a stage of CoLA: run `{row.command}` (docs/cola.md)")
    cfg = resolve_config(cfg)
    # Everything a user can get wrong is checked before the run directory is created, so a bad input
    # leaves no run directory behind (and --overwrite does not destroy the old run for nothing).
    with Run(cfg.output_dir, to_dict(cfg), resume=resume, overwrite=overwrite, quiet=quiet, save_every=cfg.save_every,
             eval_every=cfg.eval_every, keep=cfg.save_total_limit, divisible={"batch_size": cfg.batch_size},
             sharding=True) as run:
        if run.zero is not None:  # DeepSpeed's batch sizes and clipping are lolkit's (a disagreeing config: refused)
            from .run import configure_deepspeed

            configure_deepspeed(run.accelerator, cfg.batch_size, cfg.micro_batch_size, cfg.optim.max_grad_norm)
        return _offline(cfg, row, run)


def _offline(cfg: TrainConfig, algo: Algorithm, run: Run) -> Path:
    from accelerate.utils import set_seed

    accelerator, main = run.accelerator, run.main
    set_seed(cfg.seed)
    model, tokenizer, model_path = algo.model.load(cfg, device=run.device)
    unit = "all" if (algo.unit == "best" and cfg.algo.sampling == "all_priority") else algo.unit
    data = load_train_data(cfg.data, tokenizer, algo, which=unit, window=context_window(model), model=model_path)
    # what the user set (None: from the data): eval of this run on other prompts derives an unset length anew
    asked = {"max_prompt_len": cfg.data.max_prompt_len, "max_response_len": cfg.data.max_response_len}
    cfg.data.max_prompt_len, cfg.data.max_response_len = data.max_prompt_len, data.max_response_len
    from .reward_model import CONFIG_KEY

    if hasattr(model.config, CONFIG_KEY):  # a reward model keeps the lengths it trains with, for scoring
        setattr(model.config, CONFIG_KEY, {"max_prompt_len": data.max_prompt_len, "max_response_len": data.max_response_len})
    # the reward is built once: an unknown reward or a bad reward config fails here, not at the first validation
    reward = None
    if cfg.reward:
        from .rewards import get_reward

        reward = get_reward(cfg.reward)
    validator = (algo.validator or Validator)(cfg, data, tokenizer, reward)  # checks its validation data
    # on --resume, the killed run's leftovers (half-written temporaries, a directory between renames) go
    run.create(to_dict(cfg))
    world, rank = accelerator.num_processes, accelerator.process_index
    if main:
        data.report(run.say)
    if data.tied_pairs:
        run.say(f"{data.tied_pairs} ranking pairs with equal rewards dropped (no preference)")
    from .engine import prepare_engine

    fresh_adapter = (cfg.model.lora or cfg.model.qlora) and not (Path(model_path) / "adapter_config.json").exists()
    dist = run.dist
    engine = prepare_engine(cfg, algo, model, tokenizer, data, model_path, fresh_adapter=bool(fresh_adapter),
                            log=run.say if main else (lambda m: None), run=run.path, dist=dist)
    plan = StepPlan(data.lengths, cfg.batch_size, cfg.micro_batch_size, cfg.seed, rank, world, engine.pool,
                    engine.weights)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * plan.steps_per_epoch))
    optimizer = make_optimizer(cfg.optim, model)
    scheduler = make_scheduler(cfg.optim, optimizer, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    weights = ModelWeights(unwrapped, tokenizer)
    a = cfg.algo
    params = LossParams(clip=a.clip, kl_beta=a.kl_beta, gold_u=a.gold_u, beta=a.beta, dpo_loss=a.dpo_loss,
                        label_smoothing=a.label_smoothing, reference_free=a.reference_free, sft_weight=a.sft_weight,
                        group_size=data.group_size, center_rewards_coefficient=a.center_rewards_coefficient)
    start = run.restore(weights, optimizer, scheduler)
    total, trainable = count_parameters(unwrapped)
    run.write_info({
        "algo": algo.name, "model_path": model_path, "data": data.source, "examples": len(data.examples),
        "units": len(data.units),
        "records": len(data.records), "val_prompts": len(data.val_prompts), "parameters": total,
        "trainable_parameters": trainable, "total_steps": total_steps, "steps_per_epoch": plan.steps_per_epoch,
        "device": str(accelerator.device), "reward_shift": data.reward_shift,
        "pool": len(plan.pool), "tied_pairs_dropped": data.tied_pairs, "model_kind": algo.model.name,
        "truncation": {**data.truncation_json(), "asked": asked},
    })
    model.train()
    t_last = time.perf_counter()
    ties_told = False
    backward, no_sync = run.accumulation()
    with run.logging(total_steps, cfg.report_to):
        for step in range(start, total_steps):
            sums, pad, tokens = accumulate_gradients(
                model, algo, params, data, engine, plan.step(step), tokenizer.pad_token_id, accelerator.device,
                cfg.batch_size / world, backward, no_sync)
            if world > 1:  # every process saw part of the step: add up their sums
                total = dist.sum({**{k: v.item() for k, v in sums.items()}, "pad": pad, "tokens": tokens})
                pad, tokens = int(total.pop("pad")), int(total.pop("tokens"))
                sums = {k: torch.tensor(v) for k, v in total.items()}
            grad_norm = None
            if cfg.optim.max_grad_norm:  # under DeepSpeed: the norm its step (the last backward) clipped by
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            now = time.perf_counter()
            if not ties_told and sums.get("ties") is not None and sums["ties"].item() > 0:
                run.say("PRO: a ranking whose candidates all have the same reward trains its NLL term only (its "
                        "ranking term is constant); the 'ties' column counts them per step")
                ties_told = True
            response_tokens = sums.pop("response_tokens").item()
            row = {"step": step + 1, "epoch": round((step + 1) / plan.steps_per_epoch, 4),
                   **{k: v.item() / cfg.batch_size for k, v in sums.items()},
                   **loss_views(sums["loss"].item(), cfg.batch_size, response_tokens),
                   "lr": lr, "grad_norm": grad_norm, "pad_fraction": round(pad / max(tokens, 1), 4),
                   "step_time": round(now - t_last, 4)}
            t_last = now
            row.update(run.validate(step + 1, validator, weights, unwrapped))
            run.log(row)
            run.checkpoint(step + 1, weights, optimizer, scheduler, metric=validator.metric)
    return run.finish(weights)
