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

Before the first iteration the mean reward of the BC policy is measured on the evaluation prompts; the same
measurement of the trained policy (same sampling seed) is the stage's validation (``val_reward``, every
``eval_every`` iterations and at the end, the best kept in ``checkpoints/best``); ``summary.json`` holds both.
The stage runs inside the run lifecycle every loop shares (:mod:`lolkit.run`): the prompt order and the KL
controller are parts of each checkpoint, so ``--resume`` continues mid-stage exactly.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import ModuleWeights
from ..config import OptimConfig
from ..errors import LolkitError
from ..losses.ppo import policy_loss
from ..rl import AdaptiveKLController, gae, kl_penalty_rewards, masked_mean, whiten
from ..run import make_optimizer, read_metrics
from ..tracking import loss_views
from .generate import LatentSample, latent_generate_sharded, response_text
from .modules import LatentPolicy
from .train import BatchOrder, StageOptions, stage_run


@dataclass
class RLOptions(StageOptions):
    run: str
    reward: str | None = None  # default: the built-in task of the run's corpus
    data: str | None = None  # prompts (records JSONL); default: the built-in task's train split
    eval_data: str | None = None  # default: the same prompts (first eval_prompts of them)
    steps: int = 30  # iterations (rollout + update)
    prompts_per_step: int = 8  # N
    samples_per_prompt: int = 4  # M (the group)
    epochs: int = 2
    minibatch_size: int = 16
    clip: float = 0.2
    kl_beta: float = 0.05
    kl_target: float | None = None
    max_new_tokens: int = 16
    action_temperature: float = 1.0
    eval_prompts: int = 32
    eval_samples: int = 2


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


class RewardOfPolicy:
    """The stage's validation: the mean reward of a policy's latent samples on the evaluation prompts."""

    metric = "val_reward"
    enabled = True

    def __init__(self, cola, reward, prompt_ids: list[list[int]], texts: list[str], opts, policy, dist):
        self.cola, self.reward, self.prompt_ids, self.texts, self.opts = cola, reward, prompt_ids, texts, opts
        self.policy, self.dist = policy, dist

    def better(self, a: float, b: float | None) -> bool:
        return b is None or a > b

    def measure(self, policy) -> float:
        """Sampled with a seed of its own (no global random state is used); sampling and scoring are shared
        out among the processes."""
        from ..distributed import score_sharded

        tok, o = self.cola.tokenizer, self.opts
        enc = [ids for ids in self.prompt_ids for _ in range(o.eval_samples)]
        out = latent_generate_sharded(self.dist, self.cola.base, self.cola.world, policy, enc, pad_id=tok.pad_token_id,
                                      eos_id=tok.eos_token_id, max_new_tokens=o.max_new_tokens,
                                      action_temperature=o.action_temperature, seed=o.seed + 10_000)
        scores = score_sharded(self.dist, self.reward, [p for p in self.texts for _ in range(o.eval_samples)],
                               [response_text(tok, s.tokens) for s in out])
        return sum(s for s, _ in scores) / len(scores)

    def run(self) -> dict[str, float]:
        return {self.metric: self.measure(self.policy)}


def _encoded(tok, recs, *, window, reserve: int, split: str, source: str, log):
    """(records kept, their ids, their texts, the cut's JSON): prompts cut to leave room for ``reserve``
    new tokens, every cut counted (lolkit.data.tokenize.encode_prompts)."""
    from ..data.tokenize import encode_prompts, prompt_text, render_prompt

    cut = encode_prompts(tok, [render_prompt(tok, r.prompt) for r in recs], setting=None, window=window,
                         reserve=reserve, policy="warn", split=split, where=lambda i: (source, recs[i].line))
    cut.report(log)
    kept = [recs[i] for i in cut.kept]
    return kept, cut.ids, [prompt_text(r.prompt) for r in kept], cut.to_json()


def train_rl(opts: RLOptions, quiet: bool = False, log=None) -> dict:
    from ..data.tokenize import context_window
    from ..distributed import score_sharded
    from ..io import write_json
    from ..rewards import get_reward
    from .data import cola_prompts
    from .run import load_cola, policy_dir, read_run

    if min(opts.steps, opts.prompts_per_step, opts.samples_per_prompt, opts.epochs, opts.minibatch_size) < 1:
        raise LolkitError("--steps, --prompts-per-step, --samples-per-prompt, --epochs, --minibatch-size must be >= 1")
    if opts.samples_per_prompt < 2:
        raise LolkitError("--samples-per-prompt must be at least 2: the group baseline needs a group")
    info = read_run(opts.run)
    with stage_run(policy_dir(opts.run, "rl"), "cola_rl", info["model"], opts, quiet) as run:
        log = log or run.say
        cola = load_cola(opts.run)
        corpus = cola.info["data"]
        reward_name = opts.reward or (corpus.split(":", 1)[1] if corpus.startswith("builtin:") else None)
        if reward_name is None:
            raise LolkitError("--reward is required: the run's corpus is a file, not a built-in task")
        reward = get_reward(reward_name)
        tok = cola.tokenizer
        window = context_window(cola.base)
        recs, enc, raw, truncation = _encoded(tok, cola_prompts(opts.data, corpus, "train"), window=window,
                                              reserve=opts.max_new_tokens, split="train",
                                              source=opts.data or f"{corpus}/train", log=log)
        if opts.eval_data:
            ev, ev_enc, ev_raw, ev_cut = _encoded(tok, cola_prompts(opts.eval_data, corpus, "train")[: opts.eval_prompts],
                                                  window=window, reserve=opts.max_new_tokens, split="val",
                                                  source=opts.eval_data, log=log)
            truncation["val"] = ev_cut["val"]
        else:
            ev, ev_enc, ev_raw = recs[: opts.eval_prompts], enc[: opts.eval_prompts], raw[: opts.eval_prompts]
        bc = cola.policy("bc")
        bc.requires_grad_(False)
        policy = copy.deepcopy(bc).train()
        policy.requires_grad_(True)
        torch.manual_seed(opts.seed)
        optimizer = make_optimizer(OptimConfig(lr=opts.lr, weight_decay=0.0), policy)
        ctl = AdaptiveKLController(opts.kl_beta, opts.kl_target)
        order = BatchOrder(len(recs), opts.prompts_per_step, opts.seed)
        run.create()
        weights, parts = ModuleWeights({"policy": policy}), {"order": order, "kl_controller": ctl}
        start = run.restore(weights, optimizer, None, parts)
        validator = RewardOfPolicy(cola, reward, ev_enc, ev_raw, opts, policy, run.dist)
        t0 = time.perf_counter()
        state = {"reward_before": run.state["reward_before"] if start else validator.measure(bc)}
        run.write_info({"algo": "cola_rl", "reward": reward.name, "prompts": len(recs), "eval_prompts": len(ev),
                        "steps": opts.steps, "truncation": truncation})
        M = opts.samples_per_prompt
        with run.logging(opts.steps, opts.report_to, extra_logs=("rollouts.jsonl",), description="cola rl"):
            for it in range(start + 1, opts.steps + 1):
                t_it = time.perf_counter()
                pick = order.next()
                policy.eval()
                samples = latent_generate_sharded(
                    run.dist, cola.base, cola.world, policy, [enc[k] for k in pick for _ in range(M)],
                    pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=opts.max_new_tokens,
                    action_temperature=opts.action_temperature, seed=opts.seed * 1_000_003 + it * 101)
                texts = [response_text(tok, s.tokens) for s in samples]
                scored = score_sharded(run.dist, reward, [raw[k] for k in pick for _ in range(M)], texts)
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
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                        optimizer.step()
                        losses.append(float(loss.detach()))
                        acts = float(r.mask[rows_].sum())
                        summed = [summed[0] + losses[-1] * acts, summed[1] + acts, summed[2] + len(rows_)]
                        clips.append(float(out.metrics["clip_frac"].sum() / r.mask[rows_].sum().clamp_min(1)))
                ctl.update(kl)
                row = {"step": it, "loss": sum(losses) / len(losses), **loss_views(*summed),
                       "reward_mean": float(scores.mean()),
                       "kl": kl, "kl_beta": beta, "clip_frac": sum(clips) / len(clips),
                       "response_actions": float(r.mask.sum(1).mean()), "iteration_time": time.perf_counter() - t_it}
                row.update(run.validate(it, validator, weights))
                run.log(row, rollouts=[{"step": it, "prompt": raw[k], "response": texts[i], "reward": float(scores[i]),
                                        "actions": samples[i].actions}
                                       for i, k in enumerate(k for k in pick for _ in range(M)) if i % M == 0])
                run.checkpoint(it, weights, optimizer, None, parts, state=state, metric=validator.metric)
        rows = read_metrics(run.path)
        summary = {"reward": reward_name, "reward_before": state["reward_before"], "reward_after": rows[-1]["val_reward"],
                   "eval_prompts": len(ev), "eval_samples": opts.eval_samples, "steps": opts.steps,
                   "final_kl": rows[-1]["kl"], "train_seconds": time.perf_counter() - t0}
        run.finish(weights)
        if run.main:
            write_json(Path(run.path) / "summary.json", summary)
    run.dist.wait()
    return summary
