"""The actor-critic around a causal LM: value head, reference, NLPO's mask policy, and one forward
pass that gives everything PPO needs for the response positions of a rollout batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..logprobs import gather_logprobs
from ..models import is_peft
from .core import entropy, nucleus_mask


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


def trainable_state(model, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The trainable tensors (or those named), cloned to CPU (clones untie shared weights for safetensors)."""
    wanted = set(names) if names is not None else None
    out = {}
    for n, p in model.named_parameters():
        if (wanted is None and p.requires_grad) or (wanted is not None and n in wanted):
            out[n] = p.detach().to("cpu", copy=True).contiguous()
    return out


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


def _run(model, batch: RolloutBatch, hidden: bool):
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, output_hidden_states=hidden)
    P, T = batch.prompt_width, batch.actions.shape[1]
    logits = out.logits[:, P - 1 : P - 1 + T]
    h = out.hidden_states[-1][:, P - 1 : P - 1 + T] if hidden else None
    return logits, h


def token_logps(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    B, T, V = logits.shape
    return gather_logprobs(logits.reshape(B * T, V), actions.reshape(B * T)).view(B, T)


def action_mask(mask_model, batch: RolloutBatch, top_p: float) -> torch.Tensor:
    """NLPO: the top-p nucleus of the mask policy at every response position [B, T, V] (bool), always
    including the action that was taken (float noise between the cached generation pass and this
    full pass could otherwise drop a sampled token at the nucleus' edge)."""
    with torch.no_grad():
        logits, _ = _run(mask_model, batch, hidden=False)
        keep = nucleus_mask(logits, top_p)
    return keep.scatter(-1, batch.actions[..., None], True)


@dataclass
class Forward:
    logps: torch.Tensor  # [B, T] log-prob of the action under the (masked, for NLPO) policy
    raw_logps: torch.Tensor  # [B, T] under the unmasked policy (the KL penalty's)
    entropy: torch.Tensor  # [B, T] of the (masked) policy
    values: torch.Tensor | None  # [B, T]


def policy_forward(policy, head: ValueHead, batch: RolloutBatch, *, critic=None, keep: torch.Tensor | None = None,
                   values: bool = True) -> Forward:
    """One policy pass over a rollout micro-batch. With ``keep`` (NLPO) log-probs and entropy are of
    the distribution renormalised over the kept actions; ``raw_logps`` stay unmasked."""
    shared = values and critic is None
    logits, h = _run(policy, batch, hidden=shared)
    logits = logits.float()
    raw = token_logps(logits, batch.actions)
    masked_logits = logits.masked_fill(~keep, float("-inf")) if keep is not None else logits
    logps = token_logps(masked_logits, batch.actions) if keep is not None else raw
    v = None
    if values:
        if critic is not None:
            _, h = _run(critic, batch, hidden=True)
        v = head(h)
    return Forward(logps, raw, entropy(masked_logits), v)


@torch.no_grad()
def reference_logps(policy, reference, batch: RolloutBatch) -> torch.Tensor:
    """log π_ref(a_t|s_t): the frozen copy, or — with LoRA/QLoRA — the policy with its adapter off."""
    if reference is None:
        assert is_peft(policy)
        with policy.disable_adapter():
            logits, _ = _run(policy, batch, hidden=False)
    else:
        logits, _ = _run(reference, batch, hidden=False)
    return token_logps(logits.float(), batch.actions)
