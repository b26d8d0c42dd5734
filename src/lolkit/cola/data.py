"""Corpus reading and the frozen base LM's hidden states, computed once and cached on disk.

A corpus is a list of token sequences: a built-in task's training records (``builtin:colours``), a
records JSONL (each prompt with each of its responses: prompt tokens + response tokens + EOS, the
spec's separate tokenisation), a JSONL of ``{"text": ...}`` lines or a plain ``.txt`` file (one text per
non-empty line, + EOS). Stage 0 and stage 1 both read the cache ``cache/hidden-<key>.safetensors``:
``h`` [N, D] (all sequences' final hidden states, concatenated), ``ids`` [N] and ``offsets`` [S + 1].
The key hashes the base model's files, the token ids and the dtype, so a cache is never trusted
for another model or corpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LolkitError, data_error

CACHE_FORMAT = "lolkit-cola-hidden/1"


def read_corpus(spec: str, tokenizer, max_len: int) -> list[list[int]]:
    """Token id sequences (each at most ``max_len``; longer ones keep their start)."""
    from ..data.tokenize import encode_pair, render_prompt

    eos = tokenizer.eos_token_id
    seqs: list[list[int]] = []
    if spec.startswith("builtin:"):
        from ..data.dataset import builtin_records

        recs = builtin_records(spec.split(":", 1)[1], "train")
        pairs = [(r.prompt, y) for r in recs for y in r.responses]
    else:
        p = Path(spec)
        if not p.is_file():
            raise LolkitError(f"{spec}: corpus file not found (give a .txt, a JSONL or builtin:TASK)")
        pairs = []
        if p.suffix == ".txt":
            texts = [t for t in p.read_text(encoding="utf-8").splitlines() if t.strip()]
            seqs = [tokenizer(t, add_special_tokens=True)["input_ids"] + [eos] for t in texts]
        else:
            from ..data.schema import detect_kind, parse_record
            from ..io import iter_jsonl

            for line, obj in iter_jsonl(p):
                if "text" in obj and detect_kind(obj) is None:
                    if not isinstance(obj["text"], str) or not obj["text"].strip():
                        raise data_error(spec, line, "text", "expected a non-empty string")
                    seqs.append(tokenizer(obj["text"], add_special_tokens=True)["input_ids"] + [eos])
                else:
                    rec = parse_record(spec, line, obj)
                    pairs += [(rec.prompt, y) for y in rec.responses]
    for prompt, response in pairs:
        e = encode_pair(tokenizer, render_prompt(tokenizer, prompt), response, max_len, max_len)
        seqs.append(list(e.prompt_ids + e.response_ids))
    seqs = [s[:max_len] for s in seqs if len(s) >= 2]
    if not seqs:
        raise LolkitError(f"{spec}: the corpus has no sequence of at least two tokens")
    return seqs


def cola_prompts(spec: str | None, corpus: str, split: str) -> list:
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


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], valid [B, T]) right-padded (or left-padded)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        valid[i, sl] = True
    return ids, valid


def positions(valid: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (0 at each sequence's first real token)."""
    return (valid.long().cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def base_hidden(model, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The frozen base LM's final hidden states [B, T, D] (``lm_head`` of them = its logits)."""
    out = model.get_decoder()(input_ids=ids, attention_mask=valid.long(), position_ids=positions(valid), use_cache=False)
    return out.last_hidden_state.float()


@dataclass
class HiddenCache:
    h: torch.Tensor  # [N, D] float32
    ids: torch.Tensor  # [N]
    offsets: list[int]  # [S + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [B, T, D], ids [B, T], valid [B, T]) for sequences ``idx``, right-padded."""
        spans = [(self.offsets[i], self.offsets[i + 1]) for i in idx]
        T = max(b - a for a, b in spans)
        h = torch.zeros(len(idx), T, self.h.shape[1])
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        valid = torch.zeros(len(idx), T, dtype=torch.bool)
        for r, (a, b) in enumerate(spans):
            h[r, : b - a], ids[r, : b - a], valid[r, : b - a] = self.h[a:b], self.ids[a:b], True
        return h, ids, valid


def cache_key(model_path: str, seqs: list[list[int]], dtype: str) -> str:
    from ..engine.fingerprint import model_digest

    blob = json.dumps({"format": CACHE_FORMAT, "model": model_digest(model_path), "seqs": seqs, "dtype": dtype})
    return hashlib.sha256(blob.encode()).hexdigest()


def hidden_cache(run: Path, model, model_path: str, seqs: list[list[int]], pad_id: int, batch_size: int = 16,
                 log=None, dist=None) -> HiddenCache:
    """Load the run's cache for (model, corpus), or compute it (batch by batch) and write it atomically. Under
    several processes (``dist``) each computes its share of the batches, an all-reduce assembles the whole on
    every process, and the main one writes it."""
    from safetensors.torch import load_file, save_file

    from ..distributed import Dist
    from ..io import atomic_path, file_sha256, read_json, warn, write_json

    dist = dist or Dist()
    dist.wait()  # every process looks at the cache before the main one writes it

    key = cache_key(model_path, seqs, str(next(model.parameters()).dtype))
    path = run / "cache" / f"hidden-{key[:16]}.safetensors"
    check = path.with_suffix(".json")  # size and SHA-256 of the tensors, written after them
    usable = False
    if path.is_file():
        try:
            want = read_json(check) if check.is_file() else None
        except LolkitError:  # a damaged record: the tensors are computed again
            want = None
        size = path.stat().st_size
        usable = isinstance(want, dict) and want.get("size") == size and want.get("sha256") == file_sha256(path)
        if not usable and dist.is_main:
            warn(f"{path} fails verification against {check.name}: computing the hidden states again")
    if dist.world > 1:  # every process must take the same branch (it joins the all-reduce below or not)
        usable = int(dist.sum({"usable": float(usable)})["usable"]) == dist.world
    if usable:
        t = load_file(str(path))
        if log:
            log(f"hidden states: reused {path}")
        return HiddenCache(t["h"], t["ids"], t["offsets"].tolist())
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths together: less padding
    offsets = [0]
    for s_ in seqs:
        offsets.append(offsets[-1] + len(s_))
    flat = torch.zeros(offsets[-1], model.config.hidden_size, dtype=torch.float32)
    device = next(model.parameters()).device
    for b, s in enumerate(range(0, len(order), batch_size)):
        if not dist.owns(b):
            continue
        idx = order[s : s + batch_size]
        ids, valid = pad_batch([seqs[i] for i in idx], pad_id)
        h = base_hidden(model, ids.to(device), valid.to(device)).cpu()
        for r, i in enumerate(idx):
            flat[offsets[i] : offsets[i + 1]] = h[r, : len(seqs[i])]
    if dist.world > 1:  # each row was written by one process, zero on the others: the sum is the whole
        flat = dist.reduce_sum(flat.to(dist.device)).cpu()
    ids_flat = torch.tensor([t for s_ in seqs for t in s_], dtype=torch.long)
    if dist.is_main:
        with atomic_path(path) as tmp:
            save_file({"h": flat, "ids": ids_flat, "offsets": torch.tensor(offsets)}, str(tmp),
                      metadata={"format": CACHE_FORMAT, "key": key})
        write_json(check, {"size": path.stat().st_size, "sha256": file_sha256(path)})
    dist.wait()
    if log:
        log(f"hidden states: {len(seqs)} sequences, {flat.shape[0]} tokens → {path}")
    return HiddenCache(flat, ids_flat, offsets)
