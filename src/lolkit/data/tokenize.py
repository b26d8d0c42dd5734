"""Tokenisation and batching, per the spec (shared/spec/algorithms.md, "Tokenisation").

Prompt and response are tokenised separately and concatenated: the prompt is truncated on the left
(its end is kept), EOS is appended to the response and the result is truncated on the right (its
start is kept). A response that does not fit loses its EOS and counts as truncated. Only response
tokens are scored.

Nothing is cut silently: every loop that cuts a prompt or a response counts the cuts per split with
:class:`Truncation` and applies ``data.truncation`` (``warn``: report the count, ``error``: stop at
the first record that does not fit, naming its file, line and field, ``drop``: leave such examples
out and count them). Unset lengths keep everything the model's context allows
(:func:`pair_lengths`, :func:`prompt_limit`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..config import TRUNCATION
from ..errors import LolkitError, data_error, warn
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


def encode_prompt(tokenizer, text: str, max_prompt_len: int | None) -> list[int]:
    """The prompt's token ids (special tokens included), its last ``max_prompt_len`` of them; all of
    them when ``max_prompt_len`` is None."""
    if max_prompt_len is not None and max_prompt_len < 1:  # ids[-0:] would silently keep the whole prompt
        raise LolkitError(f"max_prompt_len must be at least 1, got {max_prompt_len}")
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids and text == "":  # a TRL `text` record: the whole text is the response, after the start token
        ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    if not ids:
        raise LolkitError(f"prompt {text[:40]!r} encodes to no tokens")
    return ids if max_prompt_len is None else ids[-max_prompt_len:]


CHECKED = 16  # texts of each batch encoded both ways before the fast path is trusted for the rest


def encode_texts(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=...)["input_ids"]``, faster for large batches: a fast
    tokenizer's Rust backend is called directly (``encode_batch_fast``: no offsets, no Python objects
    per token), which skips most of the per-text work of the tokenizer's own call. The first texts of
    every batch go through both, and any difference (a tokenizer class that adds tokens or changes the
    text in Python) sends the whole batch through the tokenizer's own call. That call also comes first,
    so the backend is in the state it leaves it in (no padding, no truncation, its special-token mode)."""
    texts = list(texts)
    head = tokenizer(texts[:CHECKED], add_special_tokens=add_special_tokens)["input_ids"] if texts else []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if len(texts) <= CHECKED or not hasattr(backend, "encode_batch_fast"):
        return head + (tokenizer(texts[CHECKED:], add_special_tokens=add_special_tokens)["input_ids"]
                       if len(texts) > CHECKED else [])
    fast = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
    if fast[:CHECKED] != head:
        return head + tokenizer(texts[CHECKED:], add_special_tokens=add_special_tokens)["input_ids"]
    return fast


def cut_pair(prompt_ids: Sequence[int], response_ids: Sequence[int], eos_id: int, max_prompt_len: int | None,
             max_response_len: int | None) -> Encoded:
    """The spec's cut of one example from its full token ids (the response without its EOS): the
    prompt keeps its end, EOS is appended to the response and the result keeps its start (None: no cut)."""
    r = list(response_ids) + [eos_id]
    p = prompt_ids if max_prompt_len is None else prompt_ids[-max_prompt_len:]
    if max_response_len is None or len(r) <= max_response_len:
        return Encoded(tuple(p), tuple(r), False)
    return Encoded(tuple(p), tuple(r[:max_response_len]), True)


def encode_pair(tokenizer, prompt: str, response: str, max_prompt_len: int | None,
                max_response_len: int | None) -> Encoded:
    p = encode_prompt(tokenizer, prompt, max_prompt_len)
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    return cut_pair(p, r, tokenizer.eos_token_id, max_prompt_len, max_response_len)


# --------------------------------------------------------------------------------------------------
# lengths: from the data, capped by the model's context
# --------------------------------------------------------------------------------------------------
class SeparateContext(int):
    """The context of an encoder–decoder model: the prompt (the encoder's input) and the response (the
    decoder's) have this many positions each, instead of sharing them. An ``int``, so every loop passes
    it on as it passes a causal LM's context; :func:`pair_lengths` and :func:`prompt_limit` read the
    difference (it prints as the number, so messages read the same)."""


def context_window(model) -> int | None:
    """Positions the model can attend over (its config's ``max_position_embeddings`` / ``n_positions``);
    None when the config does not say (T5: relative positions). An encoder–decoder model's is a
    :class:`SeparateContext`."""
    conf = getattr(model, "config", None)
    if conf is not None and hasattr(conf, "get_text_config"):
        conf = conf.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(conf, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return SeparateContext(value) if getattr(conf, "is_encoder_decoder", False) else value
    return None


@dataclass(frozen=True)
class Lengths:
    """The lengths a run cuts to (None: no cut), where they came from, and the warning to print when
    the model's context forced them below what the data or the settings asked for."""

    max_prompt_len: int | None
    max_response_len: int | None
    origin: str  # "data" (both from the data), "config" (both set), or "data+config"
    clamped: str | None = None


def _origin(*settings) -> str:
    given = [s is not None for s in settings]
    return "config" if all(given) else "data" if not any(given) else "data+config"


def pair_lengths(prompt_setting: int | None, response_setting: int | None, longest_prompt: int,
                 longest_response: int, window: int | None, model: str = "the model") -> Lengths:
    """Lengths for training on (prompt, response) pairs. An unset length is the data's longest
    (``longest_response`` counts the EOS), a set one is kept. When the longest example the lengths
    allow exceeds the model's context, both are lowered to fit (with one warning): the response keeps
    what it needs up to half the context or whatever the prompt leaves, the prompt takes the rest."""
    mpl = longest_prompt if prompt_setting is None else prompt_setting
    mrl = longest_response if response_setting is None else response_setting
    origin = _origin(prompt_setting, response_setting)
    need_p, need_r = min(mpl, longest_prompt), min(mrl, longest_response)
    if isinstance(window, SeparateContext):  # encoder and decoder: each side fits on its own
        if need_p <= window and need_r <= window:
            return Lengths(max(mpl, 1), max(mrl, 1), origin)
        p, r = min(max(mpl, 1), window), min(max(mrl, 1), window)
        note = (f"prompts of {need_p} and responses of {need_r} tokens do not fit the {window} positions the "
                f"encoder and the decoder of {model} each have; cutting to data.max_prompt_len = {p}, "
                f"data.max_response_len = {r}")
        return Lengths(p, r, origin, note)
    if window is None or need_p + need_r <= window:
        return Lengths(max(mpl, 1), max(mrl, 1), origin)
    if window < 2:
        raise LolkitError(f"{model} has a context of {window} token(s): no room for a prompt and a response")
    r = max(1, min(need_r, max(window - need_p, window // 2)))
    p = max(1, min(need_p, window - r))
    asked = ("the data's longest prompt and response" if origin == "data" else
             "data.max_prompt_len + data.max_response_len" if origin == "config" else
             "the lengths (from the data and the settings)")
    note = (f"{asked} need {need_p} + {need_r} tokens, more than the context of {model} ({window}); "
            f"cutting to data.max_prompt_len = {p}, data.max_response_len = {r}")
    return Lengths(p, r, origin, note)


def prompt_limit(setting: int | None, window: int | None, reserve: int, model: str = "the model") -> Lengths:
    """The prompt length of a loop that generates ``reserve`` new tokens: ``setting`` when set, else
    the whole prompt; lowered (with one warning) to what the model's context leaves after ``reserve``
    (an encoder–decoder model generates in its decoder: the encoder's context is the prompt's alone)."""
    origin = "data" if setting is None else "config"
    if window is None:
        return Lengths(setting, None, origin)
    if isinstance(window, SeparateContext):
        reserve = 0
    room = window - reserve
    if room < 1:
        raise LolkitError(f"{reserve} new tokens leave no room for a prompt in the context of {model} ({window})")
    if setting is None:
        return Lengths(room, None, origin)
    if setting <= room:
        return Lengths(setting, None, origin)
    asked = f"data.max_prompt_len = {setting}" + (f" + {reserve} new tokens exceed" if reserve else " exceeds")
    return Lengths(room, None, origin, f"{asked} the context of {model} ({window}); cutting prompts to {room} tokens")


# --------------------------------------------------------------------------------------------------
# counting cuts, and data.truncation
# --------------------------------------------------------------------------------------------------
@dataclass
class Truncation:
    """How many prompts and responses of one split were cut to fit, and how many examples (or
    prompts) ``data.truncation = drop`` left out."""

    split: str
    policy: str
    max_prompt_len: int | None
    max_response_len: int | None = None
    prompts: int = 0
    prompts_cut: int = 0
    responses: int = 0
    responses_cut: int = 0
    dropped: int = 0

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("split")
        out.pop("policy")
        if self.max_response_len is None and not self.responses:
            for key in ("max_response_len", "responses", "responses_cut"):
                out.pop(key)
        return out

    @property
    def cut(self) -> int:
        return self.prompts_cut + self.responses_cut

    def message(self) -> str:
        """The split's one report line."""
        parts = [f"{self.prompts_cut} of {self.prompts} prompts cut to {self.max_prompt_len} tokens"]
        if self.responses or self.max_response_len is not None:
            parts.append(f"{self.responses_cut} of {self.responses} responses cut to {self.max_response_len} tokens")
        text = f"{self.split}: " + ", ".join(parts)
        if self.dropped:
            text += f"; {self.dropped} left out (data.truncation=drop)"
        elif self.cut:
            text += " (data.truncation=drop leaves them out, =error stops at the first)"
        return text

    def report(self, log: Callable[[str], None]) -> None:
        """Cuts kept in the data are a warning; otherwise the count goes to the log (an empty split: nothing)."""
        if self.prompts or self.responses:
            (warn if self.cut and not self.dropped else log)(self.message())


def check_policy(policy: str) -> str:
    if policy not in TRUNCATION:
        raise LolkitError(f"data.truncation must be one of {', '.join(TRUNCATION)}, got {policy!r}")
    return policy


def cut_error(source: str, line: int | None, field: str, tokens: int, limit: str, eos: bool = False) -> LolkitError:
    """data.truncation = error: the first record that does not fit, by file, line and field."""
    size = f"{tokens} tokens with its EOS" if eos else f"{tokens} tokens"
    return data_error(source, line, field, f"{size}, more than {limit} (data.truncation=error; raise the limit, "
                      "or set data.truncation to warn or drop)")


@dataclass
class Prompts:
    """The prompts a generating loop keeps, their token ids, the limit they were cut to and the count."""

    ids: list[list[int]]
    kept: list[int]  # indices (into the texts given) of the prompts kept
    limits: Lengths
    truncation: Truncation

    def report(self, log: Callable[[str], None]) -> None:
        if self.limits.clamped:
            warn(self.limits.clamped)
        self.truncation.report(log)

    def to_json(self) -> dict:
        """What run.json / summary.json record about the cut."""
        return {"policy": self.truncation.policy, "max_prompt_len": self.limits.max_prompt_len,
                "lengths_from": self.limits.origin, "clamped": self.limits.clamped,
                self.truncation.split: self.truncation.to_json()}


def encode_prompts(tokenizer, texts: Sequence[str], *, setting: int | None, window: int | None, reserve: int,
                   policy: str, split: str, where: Callable[[int], tuple[str, int | None]] | None = None,
                   model: str = "the model") -> Prompts:
    """Every prompt-only loop's encoding (evaluation, ``generate``, rollouts, feedback sampling): each
    prompt's token ids, cut to :func:`prompt_limit` (``setting`` = data.max_prompt_len; ``reserve`` = the
    new tokens the loop generates), with the cuts counted and ``policy`` (data.truncation) applied.
    ``where(i)`` names prompt ``i``'s (file, line) for the ``error`` message."""
    check_policy(policy)
    limits = prompt_limit(setting, window, reserve, model)
    limit = limits.max_prompt_len
    report = Truncation(split, policy, limit, prompts=len(texts))
    ids, kept = [], []
    for i, text in enumerate(texts):
        full = encode_prompt(tokenizer, text, None)
        if limit is not None and len(full) > limit:
            report.prompts_cut += 1
            if policy == "error":
                source, line = where(i) if where is not None else (split, i + 1)
                what = (f"data.max_prompt_len = {limit}" if setting is not None and not limits.clamped else
                        f"the context of {model}'s encoder ({window})" if isinstance(window, SeparateContext) else
                        f"the {limit} tokens the context of {model} ({window}) leaves for {reserve} new tokens")
                raise cut_error(source, line, "prompt", len(full), what)
            if policy == "drop":
                report.dropped += 1
                continue
            full = full[-limit:]
        ids.append(full)
        kept.append(i)
    if texts and not kept:
        source = where(0)[0] if where is not None else split
        raise LolkitError(f"{source}: every prompt is longer than {limit} tokens, and data.truncation=drop left none")
    return Prompts(ids, kept, limits, report)


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
