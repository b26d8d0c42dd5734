"""NLPO (RL4LMs): at every generation step the policy may only choose among the top-p nucleus of a
*mask policy* — a frozen copy of the policy that is refreshed every ``mask_update_every`` rollouts.

The published code kept a stale copy; here :class:`MaskPolicy` really copies the current weights on
refresh, counts refreshes and reports a checksum of its weights, so the refresh shows in metrics.jsonl.
"""

from __future__ import annotations

import torch

from ..checkpoint import trainable_state
from ..errors import LolkitError
from .policy import checksum, frozen_copy


def nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask of the smallest set of tokens whose probability reaches ``top_p`` (the top token
    always kept), over the last axis — NLPO's action mask from the mask policy's logits.

    Golden: p = [0.5, 0.3, 0.15, 0.05], top_p 0.9 → cumulative [0.5, 0.8, 0.95, 1.0]: keep the
    first three (a token is kept while the mass *before* it is below top_p)."""
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


class MaskPolicy:
    """``initial``: the mask policy's starting weights (``ppo.mask_model``, loaded like the policy, so with the
    same adapter layout); None: a copy of the policy."""

    def __init__(self, policy, names: list[str], top_p: float, update_every: int, initial=None):
        if initial is not None:
            mine = {n: q.shape for n, q in policy.named_parameters()}
            theirs = {n: q.shape for n, q in initial.named_parameters()}
            if mine != theirs:
                differ = next((n for n in mine if theirs.get(n) != mine[n]), next(iter(set(theirs) - set(mine)), ""))
                raise LolkitError(f"ppo.mask_model: its parameters are not the policy's (first difference: {differ!r}): "
                                  "NLPO's mask policy must have the policy's architecture and sizes (each refresh "
                                  "copies the policy's weights into it)")
        self.model = frozen_copy(policy) if initial is None else initial.requires_grad_(False).eval()
        self.names = names  # the policy's trainable parameters: the only ones that can differ
        self.top_p = top_p
        self.update_every = update_every
        self.refreshes = 0

    def due(self, iteration: int) -> bool:
        """A refresh is due before rollout ``iteration`` (0-based) when it is a positive multiple of
        ``update_every``: rollouts 0..k−1 use the initial copy, k..2k−1 the first refresh, …"""
        return iteration > 0 and self.update_every > 0 and iteration % self.update_every == 0

    @torch.no_grad()
    def refresh(self, policy) -> None:
        source = dict(policy.named_parameters())
        target = dict(self.model.named_parameters())
        for n in self.names:
            target[n].copy_(source[n].detach())
        self.refreshes += 1

    def checksum(self) -> float:
        return checksum(self.model, self.names)

    def state_dict(self) -> dict:  # a checkpoint part: the copied weights and the refresh count
        return {**trainable_state(self.model, self.names), "refreshes": self.refreshes}

    def load_state_dict(self, state: dict) -> None:
        self.refreshes = state.pop("refreshes")
        self.model.load_state_dict(state, strict=False)

    @torch.no_grad()
    def keep(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The actions allowed at rows whose mask-policy logits are ``logits`` [n, V]: the top-p nucleus,
        plus the action taken (float noise between the cached generation pass and a later full pass could
        otherwise drop a sampled token at the nucleus' edge)."""
        return nucleus_mask(logits, self.top_p).scatter(-1, actions[:, None], True)

    def processor(self, attention_mask: torch.Tensor, input_ids: torch.Tensor):
        return NucleusLogitsProcessor(self.model, attention_mask, self.top_p, input_ids)


class NucleusLogitsProcessor:
    """An HF logits processor: −inf outside the mask policy's top-p nucleus. Runs the mask policy
    incrementally beside ``generate`` with its own KV cache (one new token per step). For an
    encoder–decoder mask policy, ``prompt_ids`` (the batch's encoder input, under ``attention_mask``) go
    through its encoder once, and the ``input_ids`` that generate passes are the decoder's."""

    def __init__(self, mask_model, attention_mask: torch.Tensor, top_p: float, prompt_ids: torch.Tensor):
        from ..models import is_seq2seq

        self.model, self.attn, self.top_p = mask_model, attention_mask, top_p
        self.past = None
        self.seen = 0
        self.encoder = None
        if is_seq2seq(mask_model):
            with torch.no_grad():
                self.encoder = mask_model.get_encoder()(input_ids=prompt_ids, attention_mask=attention_mask)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            new = input_ids if self.past is None else input_ids[:, self.seen :]
            out = self.model(encoder_outputs=self.encoder, attention_mask=self.attn, decoder_input_ids=new,
                             past_key_values=self.past, use_cache=True)
        elif self.past is None:
            out = self._causal(input_ids, self.attn)
        else:
            new = input_ids[:, self.seen :]
            ones = torch.ones((input_ids.shape[0], new.shape[1]), dtype=self.attn.dtype, device=self.attn.device)
            self.attn = torch.cat([self.attn, ones], dim=1)
            out = self._causal(new, self.attn)
        self.past, self.seen = out.past_key_values, input_ids.shape[1]
        keep = nucleus_mask(out.logits[:, -1], self.top_p)
        return scores.masked_fill(~keep, float("-inf"))

    def _causal(self, new: torch.Tensor, attn: torch.Tensor):
        pos = (attn.cumsum(-1) - 1).clamp_min(0)[:, -new.shape[1] :]
        return self.model(input_ids=new, attention_mask=attn, position_ids=pos, past_key_values=self.past,
                          use_cache=True)
