"""The policy (and value) update of one rollout, one class per online algorithm; an algorithm's row in
:mod:`lolkit.algorithms` names its class (``Algorithm.update``), so the loop never asks which algorithm runs.

Every update gets the same :class:`Rollout` — the rollout batch with π_old's log-probs, the values V_old,
the advantages and returns (from the KL-penalised rewards and GAE, whitened when the update asks for it)
— and returns the step's metrics, averaged over its optimizer steps:

* :class:`PPOUpdate` (ppo, nlpo) — ``ppo.epochs`` passes of shuffled minibatches of the clipped loss;
* :class:`A2CUpdate` (a2c) — one step over the whole rollout: −A·log π + c_v (V − R)² − c_ent H, no ratio,
  no clipping, RMSprop as RL4LMs configures it (or AdamW);
* :class:`TRPOUpdate` (trpo) — a natural-gradient step of the policy's trainable parameters inside the KL
  trust region (:func:`lolkit.trpo.trpo_step`), then the value function fitted on its own
  (``trpo.value_epochs`` passes, its own optimizer), as stable-baselines3-contrib's TRPO.

``optimizer`` is what the run checkpoints and the learning-rate schedule drives (TRPO: the value
function's; its policy step has no learning rate).

Under several processes (``dist``; every process holds the whole rollout) PPO's minibatches and A2C's rollout
are split by rows: each process backpropagates its rows over the whole step's token count and the gradients
are summed over the processes before clipping (:func:`lolkit.distributed.sum_gradients`). TRPO's step
(conjugate gradients and a line search over the whole rollout) and its value fit run on every process alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributed import Dist, sum_gradients
from ..losses.a2c import a2c
from ..losses.ppo import policy_loss, value_loss
from ..run import make_optimizer
from ..tracking import loss_views
from .policy import RolloutBatch, policy_forward


@dataclass
class Rollout:
    batch: RolloutBatch
    old_logps: torch.Tensor  # [B, T] log π_old (masked, for NLPO)
    old_values: torch.Tensor  # [B, T]
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor  # [B, T]

    @property
    def mask(self) -> torch.Tensor:
        return self.batch.mask


def chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class _Update:
    def __init__(self, cfg, policy, head, critic, mask_policy, modules, dist: Dist | None = None):
        self.dist = dist or Dist()
        self.cfg, self.p = cfg, cfg.ppo
        self.policy, self.head, self.critic, self.mask_policy, self.modules = policy, head, critic, mask_policy, modules
        self.optimizer = self.build_optimizer()
        self.whiten_advantages = self.p.whiten_advantages

    def build_optimizer(self):
        """The optim section's AdamW over the policy, value head and critic."""
        return make_optimizer(self.cfg.optim, self.modules)

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of a step (all of them in one process)."""
        return rows[self.dist.rank :: self.dist.world]

    def summed(self, stats: dict[str, float], params) -> dict[str, float]:
        """A data-parallel step's metrics and gradients, summed over the processes."""
        sum_gradients(self.dist, params)
        return self.dist.sum(stats)

    def clip_and_step(self, stats: dict, params) -> None:
        if self.cfg.optim.max_grad_norm:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [q for q in self.modules.parameters() if q.requires_grad]


class PPOUpdate(_Update):
    """``ppo.epochs`` passes over shuffled minibatches of ``ppo.minibatch_size`` sequences (micro-batches of
    ``micro_batch_size`` accumulated): clipped policy loss + c_v · value loss − c_ent · entropy per token."""

    def step(self, roll: Rollout, iteration: int) -> dict[str, float]:
        p, cfg, batch, mask = self.p, self.cfg, roll.batch, roll.mask
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + iteration)
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(p.epochs):
            perm = torch.randperm(len(batch), generator=gen).to(mask.device)
            for mbs in chunks(len(batch), p.minibatch_size):
                idx = perm[mbs]
                n_tok = mask[idx].sum().clamp_min(1)
                stats = {k: 0.0 for k in ("loss", "policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl")}
                loss_sum = 0.0
                share = self.share(idx)
                for ms in chunks(len(share), cfg.micro_batch_size):
                    rows = share[ms]
                    f = policy_forward(self.policy, self.head, batch.rows(rows), critic=self.critic,
                                       mask=self.mask_policy)
                    m = mask[rows]
                    pol = policy_loss(f.logps, roll.old_logps[rows], roll.advantages[rows], m, p.clip)
                    val = value_loss(f.values, roll.old_values[rows], roll.returns[rows], m, p.value_clip)
                    ent = f.entropy * m
                    per_token = pol.losses + p.vf_coef * val.losses - p.ent_coef * ent
                    (per_token.sum() / n_tok).backward()
                    for k, v in (("loss", per_token), ("policy_loss", pol.losses), ("value_loss", val.losses),
                                 ("entropy", ent), ("clip_frac", pol.metrics["clip_frac"]),
                                 ("approx_kl", pol.metrics["approx_kl"])):
                        stats[k] += float(v.detach().sum() / n_tok)
                    loss_sum += float(per_token.detach().sum())
                stats = self.summed({**stats, "loss_sum": loss_sum}, self.trainable())
                stats.update(loss_views(stats.pop("loss_sum"), len(idx), float(n_tok)))
                self.clip_and_step(stats, self.trainable())
                n_updates += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
        return {k: v / n_updates for k, v in sums.items()}


class A2CUpdate(_Update):
    """One optimizer step over the whole rollout (its micro-batches accumulated): the A2C loss of
    :func:`lolkit.losses.a2c` summed over every response token and divided by their number. The optimizer
    is RL4LMs' (stable-baselines3's) RMSprop(α = ``a2c.alpha``, ε = ``a2c.eps``) at ``optim.lr``, or with
    ``a2c.optimizer: adamw`` the optim section's AdamW."""

    def __init__(self, cfg, policy, head, critic, mask_policy, modules, dist: Dist | None = None):
        super().__init__(cfg, policy, head, critic, mask_policy, modules, dist)
        self.whiten_advantages = cfg.a2c.whiten_advantages

    def build_optimizer(self):
        a, o = self.cfg.a2c, self.cfg.optim
        if a.optimizer == "adamw":
            return super().build_optimizer()
        return torch.optim.RMSprop(self.trainable(), lr=o.lr, alpha=a.alpha, eps=a.eps, weight_decay=o.weight_decay)

    def step(self, roll: Rollout, iteration: int) -> dict[str, float]:
        p, batch, mask = self.p, roll.batch, roll.mask
        n_tok = mask.sum().clamp_min(1)
        stats = {k: 0.0 for k in ("loss", "policy_loss", "value_loss", "entropy")}
        loss_sum = 0.0
        share = self.share(torch.arange(len(batch), device=mask.device))
        for c in chunks(len(share), self.cfg.micro_batch_size):
            ms = share[c]
            f = policy_forward(self.policy, self.head, batch.rows(ms), critic=self.critic, mask=self.mask_policy)
            out = a2c(f.logps, f.values, roll.advantages[ms], roll.returns[ms], mask[ms], f.entropy,
                      vf_coef=p.vf_coef, ent_coef=p.ent_coef)
            (out.losses.sum() / n_tok).backward()
            for k, v in (("loss", out.losses), *out.metrics.items()):
                stats[k] += float(v.detach().sum() / n_tok)
            loss_sum += float(out.losses.detach().sum())
        stats = self.summed({**stats, "loss_sum": loss_sum}, self.trainable())
        stats.update(loss_views(stats.pop("loss_sum"), len(batch), float(n_tok)))
        self.clip_and_step(stats, self.trainable())
        return stats


class TRPOUpdate(_Update):
    """The policy step of :func:`lolkit.trpo.trpo_step` over the policy's trainable parameters (a LoRA
    adapter's, with LoRA), on the surrogate mean_t A_t π_θ/π_old and the full-vocabulary
    KL(π_θ ‖ π_old) over the rollout's response tokens; then ``trpo.value_epochs`` passes of shuffled
    minibatches fitting the value function alone with its own AdamW (lr ``trpo.value_lr``, which the loop
    puts into optim.lr so that the schedule and the checkpoint hold it). With ``ppo.critic: shared`` the
    value head is fitted on the policy's hidden states held fixed: fitting the trunk too would move the
    policy after its trust-region step."""

    def __init__(self, cfg, policy, head, critic, mask_policy, modules, dist: Dist | None = None):
        from ..trpo import policy_parameters

        self.actor = policy_parameters(policy)
        self.value_params = list(head.parameters()) + ([q for q in critic.parameters() if q.requires_grad]
                                                       if critic is not None else [])
        super().__init__(cfg, policy, head, critic, mask_policy, modules, dist)
        self.whiten_advantages = cfg.trpo.whiten_advantages

    def build_optimizer(self):
        """The value function's own AdamW (optim.lr = trpo.value_lr); the policy step needs none."""
        return make_optimizer(self.cfg.optim, self.value_params)

    def _objective_and_kl(self, roll: Rollout, n_tok: torch.Tensor, parts: list, stats: dict):
        """The closure :func:`~lolkit.trpo.trpo_step` evaluates: (surrogate, KL) over the rollout. Its first
        call is at θ_old: the logits it sees there are kept (detached) as π_old's for the KL of later calls."""
        from ..logprobs import gather_logprobs, response_rows, token_entropy
        from ..trpo import categorical_kl

        batch = roll.batch

        def closure():
            surrogate = kl = 0.0
            for i, ms in enumerate(chunks(len(batch), self.cfg.micro_batch_size)):
                mb = batch.rows(ms)
                rows = response_rows(self.policy, mb)
                logits = rows.logits_at(slice(None))
                if len(parts) <= i:
                    parts.append(logits.detach())
                    stats["entropy"] += float(token_entropy(logits.detach()).sum() / n_tok)
                keep = mb.mask.bool()
                ratio = torch.exp(gather_logprobs(logits, rows.targets) - roll.old_logps[ms][keep])
                surrogate = surrogate + (ratio * roll.advantages[ms][keep]).sum() / n_tok
                ones = torch.ones(len(rows), device=logits.device)
                kl = kl + categorical_kl(logits, parts[i], ones) * len(rows) / n_tok
            return surrogate, kl

        return closure

    def step(self, roll: Rollout, iteration: int) -> dict[str, float]:
        from ..logprobs import response_rows
        from ..trpo import trpo_step

        p, t, cfg, batch, mask = self.p, self.cfg.trpo, self.cfg, roll.batch, roll.mask
        n_tok = mask.sum().clamp_min(1)
        stats = {"entropy": 0.0}
        result = trpo_step(self.actor, self._objective_and_kl(roll, n_tok, [], stats), target_kl=t.target_kl,
                           cg_max_steps=t.cg_max_steps, cg_damping=t.cg_damping, shrink=t.line_search_shrink,
                           max_backtracks=t.line_search_max_iter)
        ls = result.line_search
        stats.update({"policy_loss": -ls.objective, "surrogate_before": result.objective_before,
                      "surrogate_gain": ls.objective - result.objective_before, "trust_kl": ls.kl,
                      "line_search_accepted": float(ls.accepted), "line_search_tries": float(ls.tries),
                      "line_search_coef": ls.coefficient, "step_size": result.step_size})

        # the value function, fitted on its own
        hidden = None
        if self.critic is None:  # the policy's (updated) hidden states, fixed
            with torch.no_grad():
                hidden = torch.zeros(*mask.shape, self.head.linear.in_features, device=mask.device)
                for ms in chunks(len(batch), cfg.micro_batch_size):
                    h = response_rows(self.policy, batch.rows(ms)).hidden
                    hidden[ms] = hidden[ms].masked_scatter(mask[ms].bool()[..., None], h.to(hidden.dtype))
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + iteration)
        value_sum, fits = 0.0, 0
        for _ in range(t.value_epochs):
            perm = torch.randperm(len(batch), generator=gen).to(mask.device)
            for mbs in chunks(len(batch), p.minibatch_size):
                idx = perm[mbs]
                n_mb = mask[idx].sum().clamp_min(1)
                fit = {"value_loss": 0.0}
                for ms in chunks(len(idx), cfg.micro_batch_size):
                    rows = idx[ms]
                    if hidden is not None:
                        values = self.head(hidden[rows])
                    else:
                        mb = batch.rows(rows)
                        values = mb.unflatten(self.head(response_rows(self.critic, mb).hidden))
                    val = value_loss(values, roll.old_values[rows], roll.returns[rows], mask[rows], p.value_clip)
                    (val.losses.sum() / n_mb).backward()
                    fit["value_loss"] += float(val.losses.detach().sum() / n_mb)
                self.clip_and_step(fit, self.value_params)
                value_sum += fit["value_loss"]
                fits += 1
        stats["value_loss"] = value_sum / max(fits, 1)
        stats["loss"] = stats["policy_loss"] + p.vf_coef * stats["value_loss"]
        return stats


UPDATES = {"ppo": PPOUpdate, "a2c": A2CUpdate, "trpo": TRPOUpdate}
