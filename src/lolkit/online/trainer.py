"""The online loop: PPO, NLPO, A2C and TRPO for language models (spec §3), written inline in the paper's order.

One iteration (one row of metrics.jsonl):

1. (NLPO) refresh the mask policy when due;
2. rollout: sample responses for ``batch_size`` prompts × ``samples_per_prompt`` with the policy;
3. score them with the reward → R;
4. one no-grad pass: log π_old (masked for NLPO), log π_ref, V_old;
5. per-token rewards r_t = −β(log π_old − log π_ref) + R·[t = last]; GAE → advantages, returns;
   whiten the advantages over the whole rollout (when the algorithm's update asks for it);
6. the algorithm's update (:mod:`lolkit.online.updates`, chosen by its row of the algorithm table): PPO's
   ``epochs`` passes of shuffled minibatches of the clipped loss, A2C's one step, or TRPO's trust-region
   step followed by the value fit;
7. the adaptive KL controller updates β from KL̄ (mean per-token log π_old − log π_ref of this rollout);
8. validate (greedy answers to the validation prompts, every ``eval_every`` iterations and at the
   end; the best one is kept in ``checkpoints/best``), log, write rollout samples, checkpoint.

Everything random is seeded from (seed, iteration), so ``--resume`` from the checkpoint of iteration
k gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..algorithms import get_algorithm
from ..checkpoint import ModelWeights, Trainable, trainable_state
from ..config import TrainConfig, check_settings, default_lr, to_dict
from ..data.prompts import encode_loop_prompts, iteration_prompts, load_validation
from ..errors import LolkitError
from ..io import child_path
from ..models import count_parameters, is_peft, load_model
from ..rl import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    kl_penalty_rewards,
    masked_mean,
    normalise_rewards,
    whiten,
)
from ..run import Run, make_scheduler
from .policy import ValueHead, build_batch, frozen_copy, hidden_size, policy_forward, reference_logps
from .updates import UPDATES, Rollout, chunks


def resolve_online_config(cfg: TrainConfig) -> TrainConfig:
    """Online counterpart of :func:`lolkit.train.resolve_config` (defaults that depend on other settings)."""
    p, row = cfg.ppo, get_algorithm(cfg.algo.name)
    if not row.policy_lr:
        # the policy step's size comes from the trust region; the only learning rate is the value function's
        if cfg.optim.lr is not None and cfg.optim.lr != cfg.trpo.value_lr:  # (a resolved config.yaml holds value_lr)
            raise LolkitError(f"optim.lr (--lr): --algo {row.name} takes no policy learning rate (its step is set by "
                              f"{row.name}.target_kl); the value function's is {row.name}.value_lr")
        cfg.optim.lr = cfg.trpo.value_lr
    if p.mask_model is not None:
        _check_mask_model(cfg, row)
    if cfg.optim.lr is None:
        cfg.optim.lr = default_lr(cfg, "online")
    if cfg.micro_batch_size is None:
        cfg.micro_batch_size = p.minibatch_size
    if cfg.reward is None:
        if cfg.data.train is not None:
            raise LolkitError(f"--algo {cfg.algo.name} needs a reward: --reward SPEC (a task, preset, YAML file or "
                              "module:function)")
        cfg.reward = cfg.data.task
    if cfg.output_dir is None:
        data = Path(cfg.data.train).stem if cfg.data.train else cfg.data.task
        cfg.output_dir = str(child_path("runs", f"{cfg.algo.name}-{data}-seed{cfg.seed}",
                                        f"data.task {cfg.data.task!r}").as_posix())
    checks = [
        (p.samples_per_prompt >= 1 and p.minibatch_size >= 1 and p.epochs >= 1,
         "ppo.samples_per_prompt, ppo.minibatch_size and ppo.epochs must be at least 1"),
        (p.max_new_tokens >= 1, "ppo.max_new_tokens must be at least 1"),
        (p.reward_norm in ("none", "batch", "running"), f"unknown ppo.reward_norm {p.reward_norm!r} (none, batch, running)"),
        (p.critic in ("shared", "separate"), f"unknown ppo.critic {p.critic!r} (shared, separate)"),
        (0.0 < p.top_p <= 1.0, f"ppo.top_p must be in (0, 1], got {p.top_p}"),
        (p.clip > 0, f"ppo.clip must be > 0, got {p.clip}"),
        (p.kl_target is None or p.kl_target > 0, f"ppo.kl_target must be > 0 or null, got {p.kl_target}"),
        (cfg.a2c.optimizer in ("rmsprop", "adamw"), f"unknown a2c.optimizer {cfg.a2c.optimizer!r} (rmsprop, adamw)"),
        (0 <= cfg.a2c.alpha < 1 and cfg.a2c.eps > 0, "a2c.alpha must be in [0, 1) and a2c.eps > 0"),
        (cfg.trpo.target_kl > 0 and cfg.trpo.cg_damping >= 0 and 0 < cfg.trpo.line_search_shrink < 1,
         "trpo.target_kl must be > 0, trpo.cg_damping >= 0 and trpo.line_search_shrink in (0, 1)"),
        (min(cfg.trpo.cg_max_steps, cfg.trpo.line_search_max_iter, cfg.trpo.value_epochs) >= 1,
         "trpo.cg_max_steps, trpo.line_search_max_iter and trpo.value_epochs must be at least 1"),
        (cfg.trpo.value_lr > 0, f"trpo.value_lr must be > 0, got {cfg.trpo.value_lr}"),
    ]
    check_settings(cfg, checks)
    return cfg


def _check_mask_model(cfg: TrainConfig, row) -> None:
    """ppo.mask_model is NLPO's, and of the policy's kind: read from the two configs before any weights load."""
    from ..models import resolve_model, seq2seq_config

    if not row.action_mask:
        raise LolkitError(f"ppo.mask_model: --algo {row.name} has no mask policy (it is NLPO's)")
    kinds = []
    for name in (cfg.model.name, cfg.ppo.mask_model):
        conf = seq2seq_config(resolve_model(name), cfg.model.trust_remote_code)
        kinds.append("a causal LM" if conf is None else f"an encoder–decoder model ({conf.model_type})")
    if kinds[0] != kinds[1]:
        raise LolkitError(f"ppo.mask_model: {cfg.ppo.mask_model} is {kinds[1]}, and the policy {cfg.model.name} is "
                          f"{kinds[0]}: NLPO's mask policy must have the policy's architecture (each refresh copies "
                          "the policy's weights into it)")


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    cfg = resolve_online_config(cfg)
    with Run(cfg.output_dir, to_dict(cfg), resume=resume, overwrite=overwrite, quiet=quiet, save_every=cfg.save_every,
             eval_every=cfg.eval_every, keep=cfg.save_total_limit, divisible={"batch_size": cfg.batch_size}) as run:
        return _online(cfg, run)


def _online(cfg: TrainConfig, run: Run) -> Path:
    from accelerate.utils import set_seed

    from ..data.tokenize import context_window
    from ..distributed import sample_sharded, score_sharded
    from ..generation import sample_tokens
    from ..rewards import get_reward
    from ..validation import RewardValidator
    from .nlpo import MaskPolicy

    p = cfg.ppo
    set_seed(cfg.seed)
    device, dist = run.device, run.dist  # several processes: lolkit.distributed (rollouts sharded, gathered)

    # -- models: policy (+ value head), reference, critic, mask policy ---------------------------------
    # causal or encoder–decoder: rollouts, log-probs and values go through the same paths for both
    policy, tokenizer, model_path = load_model(cfg.model, trainable=True, device=device, seq2seq=True)
    trainable_names = [n for n, q in policy.named_parameters() if q.requires_grad]
    reference = None if is_peft(policy) else frozen_copy(policy)  # LoRA: the adapter switched off
    critic = None
    if p.critic == "separate":
        critic = frozen_copy(policy)
        for n, q in critic.named_parameters():
            q.requires_grad_(n in set(trainable_names))
    head = ValueHead(hidden_size(policy)).to(device)
    row = get_algorithm(cfg.algo.name)
    mask_policy = None
    if row.action_mask:
        initial = None if p.mask_model is None else \
            load_model(replace(cfg.model, name=p.mask_model), trainable=True, device=device, seq2seq=True)[0]
        mask_policy = MaskPolicy(policy, trainable_names, p.top_p, p.mask_update_every, initial)
    modules = nn.ModuleList([policy, head] + ([critic] if critic is not None else []))

    # prompts cut to fit (counted per split; data.truncation: warn, error or drop)
    window = context_window(policy)
    prompts = encode_loop_prompts(cfg, tokenizer, window=window, reserve=p.max_new_tokens, model_path=model_path,
                                  log=run.say)
    records, prompt_ids = prompts.records, prompts.ids
    reward = get_reward(cfg.reward)
    validation = load_validation(cfg, tokenizer, window=window, model_path=model_path, log=run.say)
    truncation = prompts.truncation()
    if validation:
        truncation["val"] = validation.truncation
        validator = RewardValidator(cfg, tokenizer, reward, validation.rendered, validation.texts, validation.records)
    else:
        validator = RewardValidator(cfg, tokenizer, reward, [], [], [])
    run.create()
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(records) / cfg.batch_size))
    update = UPDATES[row.update](cfg, policy, head, critic, mask_policy, modules, dist)
    optimizer = update.optimizer
    scheduler = make_scheduler(cfg.optim, optimizer, total)
    kl_ctl = AdaptiveKLController(p.kl_beta, p.kl_target, p.kl_horizon_factor)
    moments = RunningMoments()
    weights = ModelWeights(policy, tokenizer)
    parts = {"value_head": head, "kl_controller": kl_ctl, "reward_moments": moments}
    if critic is not None:
        parts["critic"] = Trainable(critic)
    if mask_policy is not None:
        parts["mask_policy"] = mask_policy
    start = run.restore(weights, optimizer, scheduler, parts)
    n_total, n_trainable = count_parameters(policy)
    run.write_info({"algo": cfg.algo.name, "model_path": model_path, "data": cfg.data.train or cfg.data.task,
                    "reward": reward.name, "prompts": len(records), "parameters": n_total,
                    "trainable_parameters": n_trainable, "total_steps": total, "device": str(device),
                    "reference": "adapter disabled" if reference is None else "frozen copy", "critic": p.critic,
                    "val_prompts": len(validation.texts) if validation else 0, "truncation": truncation})

    with run.logging(total, cfg.report_to, extra_logs=("rollouts.jsonl",)):
        for it in range(start, total):
            t0 = time.perf_counter()
            # 1. NLPO: refresh the mask policy when due.
            if mask_policy is not None and mask_policy.due(it):
                mask_policy.refresh(policy)

            # 2. Rollout.
            chosen = [i for i in iteration_prompts(len(records), cfg.batch_size, cfg.seed, it)
                      for _ in range(p.samples_per_prompt)]
            t_gen = time.perf_counter()
            sampled = sample_sharded(dist, lambda part, size, seed: sample_tokens(
                policy, part, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                max_new_tokens=p.max_new_tokens, temperature=p.temperature, batch_size=size, seed=seed,
                logits_processor=mask_policy.processor if mask_policy is not None else None),
                [prompt_ids[i] for i in chosen], cfg.eval.batch_size, cfg.seed * 1_000_003 + it * 1_009)
            gen_time = time.perf_counter() - t_gen
            responses = [toks for toks, _ in sampled]
            n_tokens = sum(len(r) for r in responses)
            texts = [tokenizer.decode(r[:-1] if fin else r, skip_special_tokens=True) for r, fin in sampled]

            # 3. Task reward R.
            scored = score_sharded(dist, reward, [records[i].text for i in chosen], texts,
                                   [records[i].meta for i in chosen])
            raw_scores = torch.tensor([s for s, _ in scored], dtype=torch.float32, device=device)
            scores = normalise_rewards(raw_scores, p.reward_norm, p.reward_scale, p.reward_clip, moments)

            # 4. Old log-probs, reference log-probs and values: one no-grad pass (each process its chunks).
            batch = build_batch([prompt_ids[i] for i in chosen], responses, tokenizer.pad_token_id, device)
            mask = batch.mask
            old_logps, raw_old, ref_logps, old_values = (torch.zeros_like(mask) for _ in range(4))
            policy.eval()
            with torch.no_grad():
                for c, s in enumerate(chunks(len(batch), cfg.micro_batch_size)):
                    if not dist.owns(c):
                        continue
                    mb = batch.rows(s)
                    f = policy_forward(policy, head, mb, critic=critic, mask=mask_policy)
                    old_logps[s], raw_old[s], old_values[s] = f.logps, f.raw_logps, f.values
                    ref_logps[s] = reference_logps(policy, reference, mb)
            old_logps, raw_old, ref_logps, old_values = dist.assemble(old_logps, raw_old, ref_logps, old_values)
            old_values = old_values * mask

            # 5. Token-level rewards, GAE, whitening: every process holds the whole rollout, so the whitening and
            #    the KL fed to the controller are over all processes' samples.
            kl_beta = kl_ctl.value
            kl_tokens = (raw_old - ref_logps) * mask
            kl_mean = float(masked_mean(kl_tokens, mask))
            rewards = kl_penalty_rewards(raw_old, ref_logps, scores, mask, kl_beta)
            advantages, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
            if update.whiten_advantages:
                advantages = whiten(advantages, mask)

            # 6. The algorithm's update (PPO epochs, one A2C step, a TRPO step and value fit).
            modules.train()  # dropout was switched off at load (model.disable_dropout): ratios start at 1
            stats = update.step(Rollout(batch, old_logps, old_values, advantages, returns), it)

            # 7. Adaptive KL controller, once per rollout.
            next_beta = kl_ctl.update(kl_mean)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()

            # 8. Validate, log, sample rollouts, checkpoint.
            row = {"step": it + 1, **stats, "lr": lr,
                   "reward_mean": float(raw_scores.mean()), "reward_std": float(raw_scores.std(unbiased=False)),
                   "kl": kl_mean, "kl_beta": kl_beta, "kl_beta_next": next_beta,
                   "response_len": n_tokens / len(responses),
                   "finished": sum(f for _, f in sampled) / len(sampled),
                   "tokens_per_s": round(n_tokens / max(gen_time, 1e-9), 2),
                   "iteration_time": round(time.perf_counter() - t0, 4)}
            if mask_policy is not None:
                row["mask_refreshes"] = mask_policy.refreshes
                row["mask_checksum"] = mask_policy.checksum()
            row.update(run.validate(it + 1, validator, weights, policy))
            keep_n = len(chosen) if p.rollout_samples == 0 else min(p.rollout_samples, len(chosen))
            run.log(row, rollouts=[{"step": it + 1, "prompt": records[chosen[j]].text, "response": texts[j],
                                    "reward": scored[j][0], "rewards": scored[j][1], "tokens": len(responses[j]),
                                    "finished": sampled[j][1]} for j in range(keep_n)])
            run.checkpoint(it + 1, weights, optimizer, scheduler, parts, metric=validator.metric)

    from safetensors.torch import save_file

    return run.finish(weights, lambda folder: save_file(trainable_state(head), folder / "value_head.safetensors"))
