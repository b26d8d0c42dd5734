"""The online loop: PPO and NLPO for language models (spec §3), written inline in the paper's order.

One iteration (one row of metrics.jsonl):

1. (NLPO) refresh the mask policy when due;
2. rollout: sample responses for ``batch_size`` prompts × ``samples_per_prompt`` with the policy;
3. score them with the reward → R;
4. one no-grad pass: log π_old (masked for NLPO), log π_ref, V_old;
5. per-token rewards r_t = −β(log π_old − log π_ref) + R·[t = last]; GAE → advantages, returns;
   whiten the advantages over the whole rollout;
6. ``epochs`` passes of shuffled minibatches: clipped policy loss + c_v · value loss − c_ent · entropy;
7. the adaptive KL controller updates β from KL̄ (mean per-token log π_old − log π_ref of this rollout);
8. validate (greedy answers to the validation prompts, every ``eval_every`` iterations and at the
   end; the best one is kept in ``checkpoints/best``), log, write rollout samples, checkpoint.

Everything random is seeded from (seed, iteration), so ``--resume`` from the checkpoint of iteration
k gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import TrainConfig, check_settings, default_lr, to_dict
from ..errors import LolkitError
from ..io import atomic_path, child_path, dumps, read_json, write_json
from ..losses.ppo import policy_loss, value_loss
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
from ..run import check_run_dir, discard_unstarted, prepare_run_dir
from .policy import (
    ValueHead,
    build_batch,
    frozen_copy,
    hidden_size,
    policy_forward,
    reference_logps,
    trainable_state,
)


def resolve_online_config(cfg: TrainConfig) -> TrainConfig:
    """Online counterpart of :func:`lolkit.train.resolve_config` (defaults that depend on other settings)."""
    p = cfg.ppo
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
    ]
    check_settings(cfg, checks)
    return cfg


def make_reward(spec: str):
    """Any lolkit reward spec: a task, preset, YAML file, ``module:function`` or ``file.py:function``."""
    from ..rewards import get_reward

    return get_reward(spec)


def load_prompt_records(cfg: TrainConfig):
    """(rendered-for-the-model prompt, prompt text for the reward, meta, line) of every training prompt."""
    from ..data.schema import load_prompts
    from ..data.tokenize import prompt_text

    if cfg.data.train:
        recs = [(r.prompt, r.meta, r.line) for r in load_prompts(cfg.data.train)]
    else:
        from ..tasks import get_task

        seen: dict[str, tuple] = {}
        for k, row in enumerate(get_task(cfg.data.task).records("train", cfg.seed)):
            seen.setdefault(row["prompt"], (row.get("meta") or {}, k + 1))
        recs = [(p, m, line) for p, (m, line) in seen.items()]
    if not recs:
        raise LolkitError(f"{cfg.data.train or cfg.data.task}: no prompts")
    return [(p, prompt_text(p), m, line) for p, m, line in recs]


def load_validation(cfg: TrainConfig, tokenizer):
    """Validation prompts of an online run: ``--val-data``, else the built-in task's validation split
    (when training on a task); ``None`` when there are none (training on a prompts file alone).
    Returns (rendered prompts, prompt texts for the reward, records), at most ``eval_prompts``."""
    from ..data.dataset import builtin_records
    from ..data.schema import load_prompts, unique_prompts
    from ..data.tokenize import prompt_text, render_prompt

    if cfg.data.val:
        recs = load_prompts(cfg.data.val)
    elif cfg.data.train is None:
        recs = builtin_records(cfg.data.task, "val")
    else:
        return None
    records = unique_prompts(recs)[: cfg.eval_prompts]
    if not records:
        return None
    return [render_prompt(tokenizer, r.prompt) for r in records], [prompt_text(r.prompt) for r in records], records


def iteration_prompts(n_prompts: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Which prompts rollout ``iteration`` uses: a pure function of (seed, iteration)."""
    rng = random.Random(f"lolkit-online-{seed}-{iteration}")
    return rng.sample(range(n_prompts), batch_size) if n_prompts >= batch_size else rng.choices(range(n_prompts), k=batch_size)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@discard_unstarted
def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    from ..data.tokenize import context_window, encode_prompts, render_prompt
    from ..evaluate import score_prompts
    from ..generation import sample_tokens
    from ..progress import TrainProgress
    from ..tracking import loss_views, open_trackers
    from ..train import (
        _append_metrics,
        _log,
        _save_best,
        _truncate_metrics,
        make_optimizer,
        make_scheduler,
    )
    from .nlpo import MaskPolicy

    cfg = resolve_online_config(cfg)
    p = cfg.ppo
    from ..algorithms import get_algorithm

    nlpo = get_algorithm(cfg.algo.name).action_mask
    check_run_dir(cfg, resume, overwrite)  # the run directory itself is made once the inputs have loaded
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- models: policy (+ value head), reference, critic, mask policy ---------------------------------
    policy, tokenizer, model_path = load_model(cfg.model, trainable=True, device=device)
    trainable_names = [n for n, q in policy.named_parameters() if q.requires_grad]
    reference = None if is_peft(policy) else frozen_copy(policy)  # LoRA: the adapter switched off
    critic = None
    if p.critic == "separate":
        critic = frozen_copy(policy)
        for n, q in critic.named_parameters():
            q.requires_grad_(n in set(trainable_names))
    head = ValueHead(hidden_size(policy)).to(device)
    mask_policy = MaskPolicy(policy, trainable_names, p.top_p, p.mask_update_every) if nlpo else None
    modules = nn.ModuleList([policy, head] + ([critic] if critic is not None else []))

    records = load_prompt_records(cfg)
    # prompts cut to fit (counted per split; data.truncation: warn, error or drop)
    window, log = context_window(policy), (lambda m: _log(m, quiet))
    source = cfg.data.train or f"builtin:{cfg.data.task}/train"
    cut = encode_prompts(tokenizer, [render_prompt(tokenizer, r[0]) for r in records], setting=cfg.data.max_prompt_len,
                         window=window, reserve=p.max_new_tokens, policy=cfg.data.truncation, split="train",
                         where=lambda i: (source, records[i][3]), model=model_path)
    cut.report(log)
    prompt_ids, records = cut.ids, [records[i] for i in cut.kept]
    reward = make_reward(cfg.reward)
    validation = load_validation(cfg, tokenizer)
    truncation = cut.to_json()
    if validation:
        vsource = cfg.data.val or f"builtin:{cfg.data.task}/val"
        vcut = encode_prompts(tokenizer, validation[0], setting=cfg.data.max_prompt_len, window=window,
                              reserve=cfg.eval.max_new_tokens, policy=cfg.data.truncation, split="val",
                              where=lambda i: (vsource, validation[2][i].line), model=model_path)
        vcut.report(log)
        validation = tuple([x[i] for i in vcut.kept] for x in validation) if vcut.kept else None
        truncation["val"] = vcut.truncation.to_json()
    run = prepare_run_dir(cfg, resume, overwrite)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(records) / cfg.batch_size))
    optimizer = make_optimizer(cfg, modules)
    scheduler = make_scheduler(cfg, optimizer, total)
    kl_ctl = AdaptiveKLController(p.kl_beta, p.kl_target, p.kl_horizon_factor)
    moments = RunningMoments()

    ckpt_dir, metrics_path, rollouts_path = run / "checkpoints", run / "metrics.jsonl", run / "rollouts.jsonl"
    start, best = 0, None
    done = ckpt.usable_checkpoint(ckpt.step_checkpoints(ckpt_dir), ckpt_dir) if resume else None
    if done:
        state = _load(done[1], policy, head, critic, mask_policy, optimizer, scheduler)
        start, best = state["step"], state.get("best")
        kl_ctl.value = state["kl_beta"]
        moments = RunningMoments(**state["reward_moments"])
    _truncate_metrics(metrics_path, start)
    _truncate_metrics(rollouts_path, start)
    n_total, n_trainable = count_parameters(policy)
    write_json(run / "run.json", {"algo": cfg.algo.name, "model_path": model_path, "data": cfg.data.train or cfg.data.task,
                                  "reward": reward.name, "prompts": len(records), "parameters": n_total,
                                  "trainable_parameters": n_trainable, "total_steps": total, "device": str(device),
                                  "reference": "adapter disabled" if reference is None else "frozen copy",
                                  "critic": p.critic,
                                  "val_prompts": len(validation[1]) if validation else 0,
                                  "truncation": truncation, "config": to_dict(cfg)})  # every setting, defaults resolved

    progress = TrainProgress(total, start, disable=quiet)
    with progress, open_trackers(cfg, run) as trackers:
        for it in range(start, total):
            t0 = time.perf_counter()
            # 1. NLPO: refresh the mask policy when due.
            if mask_policy is not None and mask_policy.due(it):
                mask_policy.refresh(policy)

            # 2. Rollout.
            chosen = [i for i in iteration_prompts(len(records), cfg.batch_size, cfg.seed, it)
                      for _ in range(p.samples_per_prompt)]
            t_gen = time.perf_counter()
            sampled = sample_tokens(
                policy, [prompt_ids[i] for i in chosen], pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                max_new_tokens=p.max_new_tokens, temperature=p.temperature, batch_size=cfg.eval.batch_size,
                seed=cfg.seed * 1_000_003 + it * 1_009,
                logits_processor=mask_policy.processor if mask_policy is not None else None)
            gen_time = time.perf_counter() - t_gen
            responses = [toks for toks, _ in sampled]
            n_tokens = sum(len(r) for r in responses)
            texts = [tokenizer.decode(r[:-1] if fin else r, skip_special_tokens=True) for r, fin in sampled]

            # 3. Task reward R.
            scored = reward.score([records[i][1] for i in chosen], texts, metas=[records[i][2] for i in chosen])
            raw_scores = torch.tensor([s for s, _ in scored], dtype=torch.float32, device=device)
            scores = normalise_rewards(raw_scores, p.reward_norm, p.reward_scale, p.reward_clip, moments)

            # 4. Old log-probs, reference log-probs and values: one no-grad pass.
            batch = build_batch([prompt_ids[i] for i in chosen], responses, tokenizer.pad_token_id, device)
            mask = batch.mask
            old_logps, raw_old, ref_logps, old_values = (torch.zeros_like(mask) for _ in range(4))
            policy.eval()
            with torch.no_grad():
                for s in _chunks(len(batch), cfg.micro_batch_size):
                    mb = batch.rows(s)
                    f = policy_forward(policy, head, mb, critic=critic, mask=mask_policy)
                    old_logps[s], raw_old[s], old_values[s] = f.logps, f.raw_logps, f.values
                    ref_logps[s] = reference_logps(policy, reference, mb)
            old_values = old_values * mask

            # 5. Token-level rewards, GAE, whitening.
            kl_beta = kl_ctl.value
            kl_tokens = (raw_old - ref_logps) * mask
            kl_mean = float(masked_mean(kl_tokens, mask))
            rewards = kl_penalty_rewards(raw_old, ref_logps, scores, mask, kl_beta)
            advantages, returns = gae(rewards, old_values, mask, p.gamma, p.lam)
            if p.whiten_advantages:
                advantages = whiten(advantages, mask)

            # 6. PPO epochs over shuffled minibatches.
            modules.train()  # dropout was switched off at load (model.disable_dropout): ratios start at 1
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + it)
            sums: dict[str, float] = {}
            n_updates = 0
            for _ in range(p.epochs):
                perm = torch.randperm(len(batch), generator=gen).to(device)
                for mbs in _chunks(len(batch), p.minibatch_size):
                    idx = perm[mbs]
                    n_tok = mask[idx].sum().clamp_min(1)
                    stats = {k: 0.0 for k in ("loss", "policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl")}
                    loss_sum = 0.0
                    for ms in _chunks(len(idx), cfg.micro_batch_size):
                        rows = idx[ms]
                        mb = batch.rows(rows)
                        f = policy_forward(policy, head, mb, critic=critic, mask=mask_policy)
                        m = mask[rows]
                        pol = policy_loss(f.logps, old_logps[rows], advantages[rows], m, p.clip)
                        val = value_loss(f.values, old_values[rows], returns[rows], m, p.value_clip)
                        ent = f.entropy * m
                        per_token = pol.losses + p.vf_coef * val.losses - p.ent_coef * ent
                        (per_token.sum() / n_tok).backward()
                        for k, v in (("loss", per_token), ("policy_loss", pol.losses), ("value_loss", val.losses),
                                     ("entropy", ent), ("clip_frac", pol.metrics["clip_frac"]),
                                     ("approx_kl", pol.metrics["approx_kl"])):
                            stats[k] += float(v.detach().sum() / n_tok)
                        loss_sum += float(per_token.detach().sum())
                    stats.update(loss_views(loss_sum, len(idx), float(n_tok)))
                    if cfg.optim.max_grad_norm:
                        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                            [q for q in modules.parameters() if q.requires_grad], cfg.optim.max_grad_norm))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    n_updates += 1
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v

            # 7. Adaptive KL controller, once per rollout.
            next_beta = kl_ctl.update(kl_mean)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()

            # 8. Validate, log, sample rollouts, checkpoint.
            last = it + 1 == total
            row = {"step": it + 1, **{k: v / n_updates for k, v in sums.items()}, "lr": lr,
                   "reward_mean": float(raw_scores.mean()), "reward_std": float(raw_scores.std(unbiased=False)),
                   "kl": kl_mean, "kl_beta": kl_beta, "kl_beta_next": next_beta,
                   "response_len": n_tokens / len(responses),
                   "finished": sum(f for _, f in sampled) / len(sampled),
                   "tokens_per_s": round(n_tokens / max(gen_time, 1e-9), 2),
                   "iteration_time": round(time.perf_counter() - t0, 4)}
            if mask_policy is not None:
                row["mask_refreshes"] = mask_policy.refreshes
                row["mask_checksum"] = mask_policy.checksum()
            if validation and ((cfg.eval_every and (it + 1) % cfg.eval_every == 0) or last):
                answers = score_prompts(policy, tokenizer, validation[0], validation[1], reward, cfg, sample=False,
                                        records=validation[2])
                row["val_reward"] = sum(a["reward"] for a in answers) / len(answers)
                if best is None or row["val_reward"] > best:
                    best = row["val_reward"]
                    _save_best(policy, tokenizer, ckpt_dir, it + 1, "val_reward", best)
            _append_metrics(metrics_path, row)
            trackers.log(row)
            keep_n = len(chosen) if p.rollout_samples == 0 else min(p.rollout_samples, len(chosen))
            with open(rollouts_path, "a", encoding="utf-8") as fh:
                for j in range(keep_n):
                    fh.write(dumps({"step": it + 1, "prompt": records[chosen[j]][1], "response": texts[j],
                                    "reward": scored[j][0], "rewards": scored[j][1],
                                    "tokens": len(responses[j]), "finished": sampled[j][1]}) + "\n")
            progress.update(it + 1, row)
            if (cfg.save_every and (it + 1) % cfg.save_every == 0) or last:
                _save(ckpt_dir / f"{ckpt.STEP_PREFIX}{it + 1}", policy, tokenizer, head, critic, mask_policy,
                      optimizer, scheduler, it + 1, kl_ctl.value, moments, best)
                ckpt.prune(ckpt_dir, cfg.save_total_limit)

    with atomic_path(run / "final", is_dir=True, manifest=True) as tmp:
        ckpt.save_model(policy, tokenizer, tmp)
        from safetensors.torch import save_file

        save_file(trainable_state(head), tmp / "value_head.safetensors")
    return run


def _save(path: Path, policy, tokenizer, head, critic, mask_policy, optimizer, scheduler, step: int,
          kl_beta: float, moments: RunningMoments, best: float | None = None) -> None:
    """A step checkpoint in the offline layout (model in HF format + trainer/), plus the value head,
    critic and mask policy weights and the controller state — safetensors and JSON only."""
    import json

    from safetensors.torch import save_file

    with atomic_path(path, is_dir=True, manifest=True) as tmp:
        ckpt.save_model(policy, tokenizer, tmp)
        t = tmp / "trainer"
        t.mkdir()
        save_file(trainable_state(head), t / "value_head.safetensors")
        if critic is not None:
            save_file(trainable_state(critic), t / "critic.safetensors")
        if mask_policy is not None:
            save_file(trainable_state(mask_policy.model, mask_policy.names), t / "mask_policy.safetensors")
        tensors, meta = ckpt._flatten_optimizer(optimizer.state_dict())
        save_file(tensors, t / "optimizer.safetensors")
        (t / "optimizer.json").write_text(json.dumps(meta))
        write_json(t / "state.json", {
            "step": step, "scheduler": scheduler.state_dict(), "kl_beta": kl_beta, "best": best,
            "reward_moments": {"mean": moments.mean, "var": moments.var, "count": moments.count},
            "mask_refreshes": mask_policy.refreshes if mask_policy is not None else 0})


def _load(path: Path, policy, head, critic, mask_policy, optimizer, scheduler) -> dict:
    import json

    from safetensors.torch import load_file

    ckpt.load_trainable_weights(policy, path)
    t = path / "trainer"
    head.load_state_dict(load_file(t / "value_head.safetensors"))
    if critic is not None:
        critic.load_state_dict(load_file(t / "critic.safetensors"), strict=False)
    state = read_json(t / "state.json")
    if mask_policy is not None:
        mask_policy.model.load_state_dict(load_file(t / "mask_policy.safetensors"), strict=False)
        mask_policy.refreshes = state["mask_refreshes"]
    meta = json.loads((t / "optimizer.json").read_text())
    optimizer.load_state_dict(ckpt._unflatten_optimizer(load_file(t / "optimizer.safetensors"), meta))
    scheduler.load_state_dict(state["scheduler"])
    return state
