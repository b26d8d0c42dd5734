"""The actor-critic around a causal LM: value head, reference, rollout batches, and one forward pass that
gives everything PPO needs at the response rows of a rollout batch.

Every pass goes through lolkit's one log-prob path (:func:`lolkit.logprobs.response_rows`): the model
keeps its final hidden states at the response rows only, and the LM head runs on those rows in chunks
(:func:`lolkit.logprobs.row_statistics`) — the [B, L, V] logits of a rollout are never built, NLPO's
nucleus mask and the entropy included.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..logprobs import gather_logprobs, response_rows, row_statistics, token_entropy
from ..models import is_peft


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the final hidden state h_t; zero-initialised so V starts at 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1).float()


def hidden_size(model) -> int:
    return int(model.config.hidden_size)


def frozen_copy(model):
    """A deep copy with gradients off (the reference without LoRA, and NLPO's mask policy)."""
    twin = copy.deepcopy(model)
    twin.requires_grad_(False)
    twin.eval()
    return twin


def checksum(model, names: list[str]) -> float:
    """Σ|θ| over the named parameters, in float64: a cheap fingerprint that shows when weights change."""
    params = dict(model.named_parameters())
    return float(sum(params[n].detach().double().abs().sum() for n in names))


@dataclass
class RolloutBatch:
    """A rollout's tensors. ``input_ids`` = left-padded prompt (width P) + right-padded response
    (width T); response token t sits at column P + t and is predicted from column P − 1 + t."""

    input_ids: torch.Tensor  # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    actions: torch.Tensor  # [B, T] response tokens (pad after the end)
    mask: torch.Tensor  # [B, T] float, 1 on response tokens
    prompt_width: int

    def __len__(self) -> int:
        return self.actions.shape[0]

    def rows(self, idx) -> RolloutBatch:
        return RolloutBatch(self.input_ids[idx], self.attention_mask[idx], self.actions[idx], self.mask[idx],
                            self.prompt_width)

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(-1) - 1).clamp_min(0)

    @property
    def response_mask(self) -> torch.Tensor:
        """[B, P + T − 1], aligned with the shifted targets ``input_ids[:, 1:]``: 1 where a response token is
        predicted (the layout of :class:`lolkit.data.tokenize.Batch`, which the log-prob path reads)."""
        out = torch.zeros(self.input_ids.shape[0], self.input_ids.shape[1] - 1, dtype=self.mask.dtype,
                          device=self.mask.device)
        out[:, self.prompt_width - 1 :] = self.mask
        return out

    def unflatten(self, values: torch.Tensor) -> torch.Tensor:
        """Per-response-token values [N] (row-major over ``mask``) → [B, T], 0 on padding."""
        out = torch.zeros(self.mask.shape, dtype=values.dtype, device=values.device)
        return out.masked_scatter(self.mask.bool(), values)


def build_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device) -> RolloutBatch:
    P = max(len(p) for p in prompts)
    T = max(len(r) for r in responses)
    B = len(prompts)
    ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[b, P - len(p) : P] = torch.tensor(p)
        ids[b, P : P + len(r)] = torch.tensor(r)
        attn[b, P - len(p) : P + len(r)] = 1
        mask[b, : len(r)] = 1.0
    actions = ids[:, P:].clone()
    return RolloutBatch(ids.to(device), attn.to(device), actions.to(device), mask.to(device), P)


@dataclass
class Forward:
    logps: torch.Tensor  # [B, T] log-prob of the action under the (masked, for NLPO) policy
    raw_logps: torch.Tensor  # [B, T] under the unmasked policy (the KL penalty's)
    entropy: torch.Tensor  # [B, T] of the (masked) policy
    values: torch.Tensor | None  # [B, T]


def policy_forward(policy, head: ValueHead, batch: RolloutBatch, *, critic=None, mask=None,
                   values: bool = True) -> Forward:
    """One policy pass over a rollout micro-batch. With ``mask`` (NLPO's :class:`~lolkit.online.nlpo.MaskPolicy`)
    log-probs and entropy are of the distribution renormalised over the actions it keeps; ``raw_logps``
    stay unmasked."""
    rows = response_rows(policy, batch)
    keep_rows = None
    if mask is not None:
        with torch.no_grad():
            keep_rows = response_rows(mask.model, batch)

    def stats(logits: torch.Tensor, sl: slice):
        targets = rows.targets[sl]
        raw = gather_logprobs(logits, targets)
        if keep_rows is None:
            return raw, raw, token_entropy(logits)
        keep = mask.keep(keep_rows.logits_at(sl), targets)
        masked = logits.masked_fill(~keep, float("-inf"))
        return gather_logprobs(masked, targets), raw, token_entropy(masked)

    logps, raw, ent = row_statistics(rows, stats)
    v = None
    if values:
        h = rows.hidden if critic is None else response_rows(critic, batch).hidden
        v = batch.unflatten(head(h))
    return Forward(batch.unflatten(logps), batch.unflatten(raw), batch.unflatten(ent), v)


@torch.no_grad()
def reference_logps(policy, reference, batch: RolloutBatch) -> torch.Tensor:
    """log π_ref(a_t|s_t) [B, T]: the frozen copy, or — with LoRA/QLoRA — the policy with its adapter off."""
    if reference is None:
        assert is_peft(policy)
        with policy.disable_adapter():
            rows = response_rows(policy, batch)
    else:
        rows = response_rows(reference, batch)
    return batch.unflatten(rows.token_logprobs())
