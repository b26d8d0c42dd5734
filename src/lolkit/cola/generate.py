"""Latent-action generation: at each step sample an action from the policy, then decode the token from
the world model; the frozen base LM (with its KV cache) turns the new token into the next state.

    a_t ~ softmax(π(h_≤t) / T_a),    x_{t+1} = argmax lm_head(WM(h_t, a_t))   (or sampled at T_x > 0)

Prompts are left-padded per batch; batch ``b`` samples with a generator seeded ``seed + b``, so a run
is reproducible for a given batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .data import pad_batch, positions


@dataclass
class LatentSample:
    tokens: list[int]  # response token ids, EOS kept at the end of a finished one
    actions: list[int]  # one per token: a_t chose tokens[t]
    action_logps: list[float]  # log π(a_t | h_≤t) under the sampling policy (at temperature 1)
    finished: bool
    states: torch.Tensor  # [P + L − 1, D]: prompt states, then the states of the fed response tokens
    prompt_len: int  # P: the action of response token j sits at state P − 1 + j


def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=gen).squeeze(-1)


@torch.no_grad()
def latent_generate(base, world, policy, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, eos_id: int,
                    max_new_tokens: int, action_temperature: float = 1.0, token_temperature: float = 0.0,
                    batch_size: int = 32, seed: int = 0) -> list[LatentSample]:
    """One :class:`LatentSample` per prompt, in order (repeat a prompt for several samples)."""
    dec, lm_head = base.get_decoder(), base.get_output_embeddings()
    device = next(base.parameters()).device
    out: list[LatentSample] = []
    for b, start in enumerate(range(0, len(prompt_ids), batch_size)):
        chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
        gen = torch.Generator().manual_seed(seed + b)
        ids, valid = pad_batch(chunk, pad_id, left=True)
        ids, valid = ids.to(device), valid.to(device)
        o = dec(input_ids=ids, attention_mask=valid.long(), position_ids=positions(valid), use_cache=True)
        H, past = o.last_hidden_state.float(), o.past_key_values
        B = len(chunk)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        toks: list[list[int]] = [[] for _ in range(B)]
        acts: list[list[int]] = [[] for _ in range(B)]
        logps: list[list[float]] = [[] for _ in range(B)]
        for step in range(max_new_tokens):
            logits = policy(H, valid)[:, -1]
            a = _pick(logits.cpu(), action_temperature, gen).to(device)
            lp = torch.log_softmax(logits.float(), -1).gather(1, a[:, None]).squeeze(1)
            x = _pick(world(H[:, -1], a, lm_head).cpu(), token_temperature, gen).to(device)
            for r in range(B):
                if not done[r]:
                    toks[r].append(int(x[r]))
                    acts[r].append(int(a[r]))
                    logps[r].append(float(lp[r]))
            done = done | (x == eos_id)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            new = ~done  # a finished row feeds padding from now on
            x = torch.where(new, x, torch.full_like(x, pad_id))
            pos = valid.long().sum(1, keepdim=True)
            valid = torch.cat([valid, new[:, None]], dim=1)
            o = dec(input_ids=x[:, None], attention_mask=valid.long(), position_ids=pos, past_key_values=past,
                    use_cache=True)
            H, past = torch.cat([H, o.last_hidden_state.float()], dim=1), o.past_key_values
        for r in range(B):
            out.append(LatentSample(toks[r], acts[r], logps[r], bool(toks[r]) and toks[r][-1] == eos_id,
                                    H[r][valid[r]].cpu(), len(chunk[r])))
    return out


def latent_generate_sharded(dist, base, world, policy, prompt_ids: Sequence[Sequence[int]], *, batch_size: int = 32,
                            seed: int = 0, **kw) -> list[LatentSample]:
    """:func:`latent_generate` with batch ``b`` sampled by rank ``b % world`` under the seed ``seed + b`` it has
    in one process; every process gets every sample, in order (the states through an all-reduce of rows
    each process fills its own of), so the result is the single-process one."""
    if dist.world == 1:
        return latent_generate(base, world, policy, prompt_ids, batch_size=batch_size, seed=seed, **kw)
    local: dict[int, list[LatentSample]] = {}

    def part(c: int, s: int, e: int) -> list:
        local[c] = latent_generate(base, world, policy, prompt_ids[s:e], batch_size=batch_size, seed=seed + c, **kw)
        return [[x.tokens, x.actions, x.action_logps, x.finished, x.prompt_len, x.states.shape[0]] for x in local[c]]

    rows = dist.map_chunks(len(prompt_ids), batch_size, part)
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + r[5])
    states = torch.zeros(offsets[-1], base.config.hidden_size, dtype=torch.float32)
    for c, samples in local.items():
        for j, x in enumerate(samples):
            k = c * batch_size + j
            states[offsets[k] : offsets[k + 1]] = x.states
    states = dist.reduce_sum(states.to(dist.device)).cpu()
    return [LatentSample(t, a, lp, bool(f), states[offsets[k] : offsets[k + 1]], p)
            for k, (t, a, lp, f, p, _) in enumerate(rows)]


def response_text(tokenizer, tokens: list[int]) -> str:
    eos = tokenizer.eos_token_id
    return tokenizer.decode(tokens[:-1] if tokens and tokens[-1] == eos else tokens, skip_special_tokens=True)


def generate_file(run: str, data: str | None, output: str, *, policy: str | None = None, num_samples: int = 4,
                  max_new_tokens: int = 32, action_temperature: float = 1.0, token_temperature: float = 0.0,
                  batch_size: int = 32, max_prompt_len: int = 256, seed: int = 0, return_actions: bool = True) -> dict:
    """``lolkit cola generate``: ``num_samples`` latent-action responses per prompt, written as response
    records with ``meta.actions`` (the action sequence, one per response token) when asked."""
    from ..data.dataset import builtin_records
    from ..data.schema import load_prompts
    from ..data.tokenize import encode_prompt, render_prompt
    from ..errors import LolkitError
    from ..io import write_jsonl
    from .run import latest_policy, load_cola

    if num_samples < 1 or max_new_tokens < 1:
        raise LolkitError("--num-samples and --max-new-tokens must be at least 1")
    cola = load_cola(run)
    which = policy or latest_policy(run)
    pol = cola.policy(which)
    if data:
        records = load_prompts(data)
    else:
        corpus = cola.info["data"]
        if not corpus.startswith("builtin:"):
            raise LolkitError("--data is required: the run's corpus is a file, and lolkit cannot guess its prompts")
        records = builtin_records(corpus.split(":", 1)[1], "test")
    tok = cola.tokenizer
    enc = [encode_prompt(tok, render_prompt(tok, r.prompt), max_prompt_len) for r in records]
    flat = [e for e in enc for _ in range(num_samples)]
    samples = latent_generate(cola.base, cola.world, pol, flat, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                              max_new_tokens=max_new_tokens, action_temperature=action_temperature,
                              token_temperature=token_temperature, batch_size=batch_size, seed=seed)
    rows = []
    for k, rec in enumerate(records):
        for s in range(num_samples):
            smp = samples[k * num_samples + s]
            meta = {**rec.meta, "source_id": rec.id, "sample": s, "finished": smp.finished, "policy": which}
            if return_actions:
                meta["actions"] = smp.actions
            rows.append({"id": f"{rec.id}-{s}", "prompt": rec.prompt, "response": response_text(tok, smp.tokens),
                         "meta": meta})
    write_jsonl(output, rows)
    return {"prompts": len(records), "responses": len(rows), "policy": which}
