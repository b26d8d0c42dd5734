"""Tokenisation and batching, per the spec (shared/spec/algorithms.md, "Tokenisation").

Prompt and response are tokenised separately and concatenated: the prompt is truncated on the left
(its end is kept), EOS is appended to the response and the result is truncated on the right (its
start is kept). A response that does not fit loses its EOS and counts as truncated. Only response
tokens are scored.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import LolkitError
from .schema import Prompt, prompt_text  # noqa: F401 (prompt_text: re-exported)


@dataclass(frozen=True)
class Encoded:
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    truncated: bool  # the response did not fit and lost its EOS

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """Plain prompts are used as they are; message lists go through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise LolkitError("conversational records need a tokenizer with a chat template, and this one has none")
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, text: str, max_prompt_len: int) -> list[int]:
    if max_prompt_len < 1:  # ids[-0:] would silently keep the whole prompt
        raise LolkitError(f"max_prompt_len must be at least 1, got {max_prompt_len}")
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids and text == "":  # a TRL `text` record: the whole text is the response, after the start token
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    if not ids:
        raise LolkitError(f"prompt {text[:40]!r} encodes to no tokens")
    return ids[-max_prompt_len:]


def encode_pair(tokenizer, prompt: str, response: str, max_prompt_len: int, max_response_len: int) -> Encoded:
    p = encode_prompt(tokenizer, prompt, max_prompt_len)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = len(r) > max_response_len
    return Encoded(tuple(p), tuple(r[:max_response_len]), truncated)


@dataclass
class Batch:
    """Right-padded sequences. ``response_mask[b, t]`` is 1 where token ``t + 1`` of row ``b`` is a
    response token, i.e. it is aligned with the shifted targets ``input_ids[:, 1:]``."""

    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long
    response_mask: torch.Tensor  # [B, L-1] float
    prompt_lens: torch.Tensor  # [B] long
    indices: list[int]  # positions of the rows in the dataset
    pad_tokens: int
    total_tokens: int

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                     self.prompt_lens.to(device), self.indices, self.pad_tokens, self.total_tokens)


def collate(items: Sequence[Encoded], indices: Sequence[int], pad_id: int) -> Batch:
    width = max(len(e) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    rmask = torch.zeros((len(items), width - 1), dtype=torch.float32)
    plens = torch.zeros(len(items), dtype=torch.long)
    for b, e in enumerate(items):
        seq = e.prompt_ids + e.response_ids
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        # target position t predicts token t+1: response tokens sit at t+1 in [P, P+R)
        rmask[b, len(e.prompt_ids) - 1 : len(seq) - 1] = 1.0
        plens[b] = len(e.prompt_ids)
    used = sum(len(e) for e in items)
    return Batch(ids, attn, rmask, plens, list(indices), width * len(items) - used, width * len(items))


def group_by_length(order: list[int], lengths: Sequence[int], group_size: int, rng: random.Random,
                    mega: int = 256) -> list[list[int]]:
    """Cut ``order`` into groups of ``group_size`` with similar lengths.

    Consecutive chunks of ``mega`` groups are sorted by length (longest first) and cut; the groups are
    then shuffled, so batches stay random across the epoch while padding stays low. A trailing group
    smaller than ``group_size`` is dropped (every optimizer step sees the same number of examples).
    """
    groups: list[list[int]] = []
    span = group_size * mega
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        groups += [chunk[k : k + group_size] for k in range(0, len(chunk), group_size)]
    groups = [g for g in groups if len(g) == group_size]
    rng.shuffle(groups)
    return groups


def micro_batches(group: list[int], lengths: Sequence[int], micro_size: int) -> list[list[int]]:
    """Split one optimizer step's examples into micro-batches of similar lengths."""
    ordered = sorted(group, key=lambda i: -lengths[i])
    return [ordered[k : k + micro_size] for k in range(0, len(ordered), micro_size)]
