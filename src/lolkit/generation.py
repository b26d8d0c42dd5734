"""Batched generation with the KV cache: one module for evaluation, validation and rollouts.

Causal LMs get their prompts left-padded and continue them; encoder–decoder models (T5, BART) get
them right-padded in the encoder (BART's absolute positions would shift under left padding) and
generate from their decoder start token, which :func:`lolkit.models.load_model` has set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data.tokenize import context_window, encode_prompt, prompt_limit


@dataclass(frozen=True)
class Generated:
    text: str
    num_tokens: int
    finished: bool  # ended with EOS rather than hitting max_new_tokens


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_samples: int = 1
    batch_size: int = 32
    max_prompt_len: int | None = None  # None: the whole prompt, up to the context minus max_new_tokens
    seed: int = 0


def _pad_prompts(prompts: Sequence[Sequence[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids [B, W] and attention mask, padded on the left (causal LMs) or the right (encoders)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        span = slice(width - len(p), width) if left else slice(0, len(p))
        ids[row, span] = torch.tensor(list(p), dtype=torch.long)
        attn[row, span] = 1
    return ids, attn


def _new_tokens(out: torch.Tensor, width: int, seq2seq: bool) -> list[list[int]]:
    """The generated tokens of each row: a causal LM's output repeats its (padded) prompt; an
    encoder–decoder's starts with the decoder start token."""
    return out[:, 1 if seq2seq else width:].tolist()


def _start_kw(model) -> dict:
    from .models import is_seq2seq

    if not is_seq2seq(model):
        return {}
    from .logprobs import decoder_start_id

    return {"decoder_start_token_id": decoder_start_id(model)}


def prompt_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches of :func:`generate`: prompt indices sorted longest first (ties in input order),
    ``batch_size`` per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _unshard(model):
    """An FSDP-sharded model's root gathered for the whole generation (None when not sharded): a PEFT
    model's ``generate`` runs the base model's forward directly, past the hook of the FSDP root that
    would gather its own weights (embeddings, final norm); the layers below gather theirs as usual."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    model.unshard()
    return model


def generate(model, tokenizer, prompts: Sequence[str], cfg: GenerationConfig, progress=None) -> list[list[Generated]]:
    """``num_samples`` continuations for each prompt, in prompt order.

    Prompts are sorted by length and padded per batch (module docstring); each batch's sampling seed is
    ``cfg.seed + batch index``, so a run is reproducible for a given batch size.
    """
    return _generate_encoded(model, tokenizer, _encoded_prompts(model, tokenizer, prompts, cfg), cfg, progress)


def _encoded_prompts(model, tokenizer, prompts: Sequence[str], cfg: GenerationConfig) -> list[list[int]]:
    """The prompts' token ids as :func:`generate` feeds them (cut to what the context leaves)."""
    limit = prompt_limit(cfg.max_prompt_len, context_window(model), cfg.max_new_tokens).max_prompt_len
    return [encode_prompt(tokenizer, p, limit) for p in prompts]


@torch.no_grad()
def _generate_encoded(model, tokenizer, encoded: list[list[int]], cfg: GenerationConfig,
                      progress=None) -> list[list[Generated]]:
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    start_kw = _start_kw(model)
    results: list[list[Generated]] = [[] for _ in encoded]
    was_training = model.training
    model.eval()
    root = _unshard(model)
    try:
        for b, idx in enumerate(prompt_batches([len(e) for e in encoded], cfg.batch_size)):
            ids, attn = _pad_prompts([encoded[i] for i in idx], pad, left=not start_kw)
            torch.manual_seed(cfg.seed + b)
            sample_kw = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0} if cfg.do_sample else {}
            out = model.generate(
                input_ids=ids.to(device), attention_mask=attn.to(device), max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.do_sample, num_return_sequences=cfg.num_samples, pad_token_id=pad,
                eos_token_id=eos, use_cache=True, **sample_kw, **start_kw,
            )
            new = _new_tokens(out, ids.shape[1], bool(start_kw))
            for row, i in enumerate(idx):
                for s in range(cfg.num_samples):
                    toks = new[row * cfg.num_samples + s]
                    finished = eos in toks
                    if finished:
                        toks = toks[: toks.index(eos)]
                    while toks and toks[-1] == pad and pad != eos:
                        toks.pop()
                    results[i].append(Generated(tokenizer.decode(toks, skip_special_tokens=True), len(toks), finished))
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
        if root is not None:
            root.reshard()
    return results


def generate_shared(model, tokenizer, prompts: Sequence[str], cfg: GenerationConfig, shards,
                    progress=None) -> list[list[Generated]]:
    """:func:`generate` with its batches shared among the processes of ``shards`` (:mod:`lolkit.shards`):
    each batch is generated with the seed it has in one :func:`generate` call, so every process gets the
    single-process result."""
    from dataclasses import replace

    encoded = _encoded_prompts(model, tokenizer, prompts, cfg)
    batches = prompt_batches([len(e) for e in encoded], cfg.batch_size)

    def work(b: int) -> list:
        outs = _generate_encoded(model, tokenizer, [encoded[i] for i in batches[b]], replace(cfg, seed=cfg.seed + b))
        return [[[g.text, g.num_tokens, g.finished] for g in gens] for gens in outs]

    done = shards.share_work(range(len(batches)), work,
                             progress=None if progress is None else (lambda b: progress(len(batches[b]))))
    results: list[list[Generated]] = [[] for _ in prompts]
    for b, idx in enumerate(batches):
        for i, gens in zip(idx, done[b], strict=True):
            results[i] = [Generated(*g) for g in gens]
    return results


def generate_file(model_name: str, prompts_path: str, output: str, cfg: GenerationConfig, *,
                  trust_remote_code: bool = False, allow_pickle: bool = False, quiet: bool = False,
                  truncation: str = "warn") -> dict:
    """``lolkit generate``: ``num_samples`` responses per prompt of a file, written as response
    records (ready for ``lolkit reward``), with ``meta.sample`` and ``meta.finished``. Prompts longer
    than the limit are cut (and counted) or, per ``truncation`` (data.truncation), stop the command
    or are left out."""
    from dataclasses import replace

    from .data.loader import write_records
    from .data.schema import load_prompts
    from .data.tokenize import encode_prompts, render_prompt
    from .models import ModelConfig, load_model
    from .progress import CountProgress
    from .shards import Shards

    records = load_prompts(prompts_path)
    shards = Shards.current()  # before the model: under several processes each takes its own GPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, _ = load_model(ModelConfig(name=model_name, trust_remote_code=trust_remote_code,
                                                 allow_pickle=allow_pickle), trainable=False, device=device,
                                     seq2seq=True)
    prompts = [render_prompt(tokenizer, r.prompt) for r in records]
    enc = encode_prompts(tokenizer, prompts, setting=cfg.max_prompt_len, window=context_window(model),
                         reserve=cfg.max_new_tokens, policy=truncation, split="prompts",
                         where=lambda i: (prompts_path, records[i].line), model=model_name)
    enc.report(lambda message: None)  # a cut is a warning; the counts go to the return value
    records, prompts = [records[i] for i in enc.kept], [prompts[i] for i in enc.kept]
    cfg = replace(cfg, max_prompt_len=enc.limits.max_prompt_len)
    with CountProgress("generate", len(prompts), disable=quiet or not shards.is_main) as bar:
        outs = generate_shared(model, tokenizer, prompts, cfg, shards, progress=bar.advance)
    rows = [{"id": f"{rec.id}-{s}", "prompt": rec.prompt, "response": g.text,
             "meta": {**rec.meta, "source_id": rec.id, "sample": s, "finished": g.finished}}
            for rec, gens in zip(records, outs, strict=True) for s, g in enumerate(gens) if g.text.strip()]
    n = write_records(output, rows) if shards.is_main else len(rows)
    return {"prompts": len(records), "responses": n, "empty": sum(len(g) for g in outs) - n,
            "truncation": enc.to_json()}


@torch.no_grad()
def sample_tokens(model, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                  do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
                  seed: int = 0, logits_processor=None) -> list[tuple[list[int], bool]]:
    """Token-level sampling for online RL: ``(response token ids, finished)`` per prompt, in order.

    Unlike :func:`generate`, tokens are returned as sampled (no decode / re-encode round trip), with
    the EOS token kept at the end of a finished response (it is an action too). Batches are taken in
    the given order, left-padded (right-padded in an encoder–decoder's encoder); batch ``b`` samples
    with seed ``seed + b``. ``logits_processor``, when given, is called as
    ``logits_processor(attention_mask, input_ids)`` per batch and returns an HF logits processor (NLPO's
    action mask) — it sees the batch's padded prompts and their attention mask.
    """
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    out_rows: list[tuple[list[int], bool]] = []
    start_kw = _start_kw(model)
    was_training = model.training
    model.eval()
    try:
        for b, start in enumerate(range(0, len(prompt_ids), batch_size)):
            ids, attn = _pad_prompts(prompt_ids[start : start + batch_size], pad_id, left=not start_kw)
            ids, attn = ids.to(device), attn.to(device)
            torch.manual_seed(seed + b)
            kw = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
            if logits_processor is not None:
                kw["logits_processor"] = LogitsProcessorList([logits_processor(attn, ids)])
            out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                 do_sample=do_sample, pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True,
                                 **kw, **start_kw)
            for toks in _new_tokens(out, ids.shape[1], bool(start_kw)):
                finished = eos_id in toks
                toks = toks[: toks.index(eos_id) + 1] if finished else toks
                out_rows.append((toks, finished))
    finally:
        model.train(was_training)
    return out_rows
