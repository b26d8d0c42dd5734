"""Latent-action RL: only the policy over the K actions learns; the base LM, IDM and world model stay frozen.

Each iteration (critic-free PPO with a group baseline, "GRPO-style"; the PPO pieces of lolkit.rl and lolkit.losses.ppo):
1. N prompts, M latent-action samples each (:func:`latent_generate`, the current policy π_old).
2. Task reward R of each response; group baseline Â = R − mean(R of the same prompt's M samples).
3. Per-action rewards as in spec §3 with the behaviour-cloned policy as the reference:
   r_t = −β (log π_old(a_t|h_≤t) − log π_BC(a_t|h_≤t)), plus Â at the last action
   (:func:`kl_penalty_rewards`).
4. Advantages = returns-to-go of r (GAE with γ = λ = 1 and V ≡ 0), whitened over the rollout.
5. ``epochs`` passes of minibatches of the clipped surrogate (:func:`policy_loss`, ε = ``clip``),
   AdamW, gradient clipping at 1.0.
6. β follows the adaptive KL controller when ``kl_target`` is set (fixed otherwise); the KL fed to it
   is the mean per-action log-ratio log π_old − log π_BC over the rollout.

Before the first and after the last iteration the mean reward of the BC policy and of the trained
policy is measured on the evaluation prompts with the same sampling seed (``summary.json``).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LolkitError
from ..losses.ppo import policy_loss
from ..rl import AdaptiveKLController, gae, kl_penalty_rewards, masked_mean, whiten
from ..tracking import loss_views
from .generate import LatentSample, latent_generate, response_text
from .modules import LatentPolicy


@dataclass
class RLOptions:
    run: str
    reward: str | None = None  # default: the built-in task of the run's corpus
    data: str | None = None  # prompts (records JSONL); default: the built-in task's train split
    eval_data: str | None = None  # default: the same prompts (first eval_prompts of them)
    steps: int = 30  # iterations (rollout + update)
    prompts_per_step: int = 8  # N
    samples_per_prompt: int = 4  # M (the group)
    epochs: int = 2
    minibatch_size: int = 16
    lr: float = 3e-4
    clip: float = 0.2
    kl_beta: float = 0.05
    kl_target: float | None = None
    max_new_tokens: int = 16
    action_temperature: float = 1.0
    eval_prompts: int = 32
    eval_samples: int = 2
    seed: int = 0
    overwrite: bool = False


@dataclass
class Rollout:
    h: torch.Tensor  # [B, T, D] states, right-padded
    valid: torch.Tensor  # [B, T]
    index: torch.Tensor  # [B, L]: the state position of response action j (0 on padding)
    actions: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L] float, 1 on real actions


def pack(samples: list[LatentSample]) -> Rollout:
    """Right-pad the samples' states; response action j of sample b sits at state P_b − 1 + j."""
    B = len(samples)
    T = max(s.states.shape[0] for s in samples)
    L = max(max(len(s.actions) for s in samples), 1)
    D = samples[0].states.shape[1]
    h, valid = torch.zeros(B, T, D), torch.zeros(B, T, dtype=torch.bool)
    index, actions, mask = (torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long),
                            torch.zeros(B, L))
    for b, s in enumerate(samples):
        n = s.states.shape[0]
        h[b, :n], valid[b, :n] = s.states, True
        k = len(s.actions)
        index[b, :k] = torch.arange(s.prompt_len - 1, s.prompt_len - 1 + k)
        actions[b, :k] = torch.tensor(s.actions, dtype=torch.long)
        mask[b, :k] = 1.0
    return Rollout(h, valid, index, actions, mask)


def action_logps(policy: LatentPolicy, r: Rollout, rows=slice(None)) -> torch.Tensor:
    """log π(a_t | h_≤t) of the rollout's actions [B, L] (0 on padding)."""
    logp = torch.log_softmax(policy(r.h[rows], r.valid[rows]).float(), -1)  # [B, T, K]
    at = logp.gather(1, r.index[rows, :, None].expand(-1, -1, logp.shape[-1]))  # [B, L, K]
    return at.gather(2, r.actions[rows, :, None]).squeeze(2) * r.mask[rows]


def group_baseline(scores: torch.Tensor, group: int) -> torch.Tensor:
    """R − (mean R of its group); groups are consecutive runs of ``group`` samples.

    Golden: R = [1, 0, 0.5, 0.5], group 2 → [0.5, −0.5, 0, 0]."""
    g = scores.view(-1, group)
    return (g - g.mean(1, keepdim=True)).reshape(-1)


def _prompts(spec: str | None, corpus: str, split: str) -> list:
    """The distinct prompts (first record of each) of ``spec``, or of the corpus task's ``split``."""
    from ..data.dataset import builtin_records
    from ..data.schema import load_prompts, unique_prompts

    if spec:
        recs = load_prompts(spec)
    elif not corpus.startswith("builtin:"):
        raise LolkitError("--data is required: the run's corpus is a file, and lolkit cannot guess its prompts")
    else:
        recs = builtin_records(corpus.split(":", 1)[1], split)
    return unique_prompts(recs)


def mean_reward(cola, policy, reward, prompts: list[str], raw: list[str], samples: int, max_new_tokens: int,
                temperature: float, seed: int) -> float:
    from ..data.tokenize import encode_prompt

    tok = cola.tokenizer
    enc = [encode_prompt(tok, p, 256) for p in prompts for _ in range(samples)]
    out = latent_generate(cola.base, cola.world, policy, enc, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                          max_new_tokens=max_new_tokens, action_temperature=temperature, seed=seed)
    scores = reward.score([p for p in raw for _ in range(samples)], [response_text(tok, s.tokens) for s in out])
    return sum(s for s, _ in scores) / len(scores)


def train_rl(opts: RLOptions, quiet: bool = False, log=None) -> dict:
    from ..data.tokenize import encode_prompt, prompt_text, render_prompt
    from ..io import atomic_path, write_json, write_jsonl
    from ..rewards import get_reward
    from .modules import save_module
    from .run import load_cola, policy_dir
    from .train import _progress, _refuse_existing

    dest = policy_dir(opts.run, "rl")
    _refuse_existing(dest, opts.overwrite)
    if min(opts.steps, opts.prompts_per_step, opts.samples_per_prompt, opts.epochs, opts.minibatch_size) < 1:
        raise LolkitError("--steps, --prompts-per-step, --samples-per-prompt, --epochs, --minibatch-size must be >= 1")
    if opts.samples_per_prompt < 2:
        raise LolkitError("--samples-per-prompt must be at least 2: the group baseline needs a group")
    cola = load_cola(opts.run)
    corpus = cola.info["data"]
    reward_name = opts.reward or (corpus.split(":", 1)[1] if corpus.startswith("builtin:") else None)
    if reward_name is None:
        raise LolkitError("--reward is required: the run's corpus is a file, not a built-in task")
    reward = get_reward(reward_name)
    tok = cola.tokenizer
    recs = _prompts(opts.data, corpus, "train")
    rendered = [render_prompt(tok, r.prompt) for r in recs]
    raw = [prompt_text(r.prompt) for r in recs]
    enc = [encode_prompt(tok, p, 256) for p in rendered]
    ev = _prompts(opts.eval_data, corpus, "train")[: opts.eval_prompts] if opts.eval_data else recs[: opts.eval_prompts]
    ev_prompts, ev_raw = [render_prompt(tok, r.prompt) for r in ev], [prompt_text(r.prompt) for r in ev]

    bc = cola.policy("bc")
    bc.requires_grad_(False)
    policy = copy.deepcopy(bc).train()
    policy.requires_grad_(True)
    torch.manual_seed(opts.seed)
    opt = torch.optim.AdamW(policy.parameters(), lr=opts.lr, weight_decay=0.0)
    ctl = AdaptiveKLController(opts.kl_beta, opts.kl_target)
    rng = random.Random(opts.seed)
    eval_seed = opts.seed + 10_000
    t0 = time.perf_counter()
    before = mean_reward(cola, bc, reward, ev_prompts, ev_raw, opts.eval_samples, opts.max_new_tokens,
                         opts.action_temperature, eval_seed)
    rows, samples_log = [], []
    order: list[int] = []
    p, update = _progress(opts.steps, quiet, "cola rl")
    with p:
        for it in range(1, opts.steps + 1):
            t_it = time.perf_counter()
            if len(order) < opts.prompts_per_step:
                fresh = list(range(len(recs)))
                rng.shuffle(fresh)
                order += fresh
            pick, order = order[: opts.prompts_per_step], order[opts.prompts_per_step:]
            M = opts.samples_per_prompt
            policy.eval()
            samples = latent_generate(cola.base, cola.world, policy, [enc[k] for k in pick for _ in range(M)],
                                      pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                                      max_new_tokens=opts.max_new_tokens, action_temperature=opts.action_temperature,
                                      seed=opts.seed * 1_000_003 + it * 101)
            texts = [response_text(tok, s.tokens) for s in samples]
            scored = reward.score([raw[k] for k in pick for _ in range(M)], texts)
            scores = torch.tensor([s for s, _ in scored], dtype=torch.float32)
            r = pack(samples)
            with torch.no_grad():
                logp_old = action_logps(policy, r)
                logp_bc = action_logps(bc, r)
            kl = float(masked_mean(logp_old - logp_bc, r.mask))
            beta = ctl.value
            per_action = kl_penalty_rewards(logp_old, logp_bc, group_baseline(scores, M), r.mask, beta)
            adv, _ = gae(per_action, torch.zeros_like(per_action), r.mask, 1.0, 1.0)
            adv = whiten(adv, r.mask)
            policy.train()
            losses, clips = [], []
            summed = [0.0, 0.0, 0.0]  # Σ loss × actions, Σ actions, Σ samples over the updates
            n = len(samples)
            for _ in range(opts.epochs):
                perm = torch.randperm(n)
                for s in range(0, n, opts.minibatch_size):
                    rows_ = perm[s : s + opts.minibatch_size]
                    out = policy_loss(action_logps(policy, r, rows_), logp_old[rows_], adv[rows_], r.mask[rows_],
                                      opts.clip)
                    loss = out.losses.sum() / r.mask[rows_].sum().clamp_min(1)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                    opt.step()
                    losses.append(float(loss.detach()))
                    acts = float(r.mask[rows_].sum())
                    summed = [summed[0] + losses[-1] * acts, summed[1] + acts, summed[2] + len(rows_)]
                    clips.append(float(out.metrics["clip_frac"].sum() / r.mask[rows_].sum().clamp_min(1)))
            ctl.update(kl)
            row = {"step": it, "loss": sum(losses) / len(losses), **loss_views(*summed),
                   "reward_mean": float(scores.mean()),
                   "kl": kl, "kl_beta": beta, "clip_frac": sum(clips) / len(clips),
                   "response_actions": float(r.mask.sum(1).mean()), "iteration_time": time.perf_counter() - t_it}
            rows.append(row)
            samples_log += [{"step": it, "prompt": raw[k], "response": texts[i], "reward": float(scores[i]),
                             "actions": samples[i].actions}
                            for i, k in enumerate(k for k in pick for _ in range(M)) if i % M == 0]
            update(it, row)
    policy.eval()
    after = mean_reward(cola, policy, reward, ev_prompts, ev_raw, opts.eval_samples, opts.max_new_tokens,
                        opts.action_temperature, eval_seed)
    summary = {"reward": reward_name, "reward_before": before, "reward_after": after,
               "eval_prompts": len(ev), "eval_samples": opts.eval_samples, "steps": opts.steps,
               "final_kl": rows[-1]["kl"], "train_seconds": time.perf_counter() - t0}
    with atomic_path(Path(dest), is_dir=True, manifest=True) as tmp:
        save_module(policy, tmp / "policy.safetensors")
        write_jsonl(tmp / "metrics.jsonl", rows)
        write_jsonl(tmp / "rollouts.jsonl", samples_log)
        write_json(tmp / "summary.json", summary)
    return summary
