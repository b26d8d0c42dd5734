"""The reference pass: the frozen reference policy scores every training response once, before
training, and the result is cached on disk.

For each example it stores the sequence log-prob log p_ref(y|x) and, when asked, the per-token
log-probs of the response. The cache lives in ``$LOLKIT_CACHE/engine/ref-<key>/`` and is keyed on
the reference model's files, the exact token ids of every example (so data, tokenizer and
truncation settings are all covered), the dtype and whether the LoRA adapter was disabled; it is
verified before it is read and published atomically (:mod:`lolkit.engine.cache`). The training step
only indexes these tensors: no reference forward pass happens inside it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.tokenize import Encoded, collate
from ..io import write_json
from ..logprobs import forward_logprobs
from .cache import read_entry, write_entry
from .fingerprint import digest, ids_digest


@dataclass
class ReferenceScores:
    seq_logps: torch.Tensor  # [N] float32
    token_logps: list[torch.Tensor] | None  # N tensors [R_i] float32 (response tokens incl. EOS)
    key: str
    cached: bool
    seconds: float

    def token_matrix(self, indices: list[int], mask: torch.Tensor) -> torch.Tensor:
        """Per-token reference log-probs placed on the response positions of a batch ``mask`` [B, T]."""
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for b, i in enumerate(indices):
            out[b, mask[b].bool()] = self.token_logps[i].to(mask.device)
        return out


def reference_key(model_digest: str, examples: list[Encoded], dtype: str, adapter_disabled: bool) -> str:
    return digest({"model": model_digest, "ids": ids_digest(e.prompt_ids + (-1,) + e.response_ids for e in examples),
                   "dtype": dtype, "adapter_disabled": adapter_disabled, "version": 1})


def reference_context(model, disable_adapter: bool):
    """Run as the reference policy: for a fresh LoRA adapter over the base, the base itself with the
    adapter switched off (no second copy of the weights in memory)."""
    if disable_adapter:
        return model.disable_adapter()
    return contextlib.nullcontext()


@torch.no_grad()
def compute_reference(model, examples: list[Encoded], pad_id: int, batch_size: int, *, disable_adapter: bool,
                      progress=None, rank: int = 0, world: int = 1, reduce_sum=None
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sequence and per-token reference log-probs of every example. With several processes each
    scores a strided shard and ``reduce_sum`` (an all-reduce) assembles the whole on every rank."""
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))[rank::world]
    width = max((len(e.response_ids) for e in examples), default=0)
    seq = torch.zeros(len(examples), dtype=torch.float32, device=device)
    tok = torch.zeros((len(examples), width), dtype=torch.float32, device=device)
    was = model.training
    model.eval()
    try:
        with reference_context(model, disable_adapter):
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                batch = collate([examples[i] for i in idx], idx, pad_id).to(device)
                seq_lp, tok_lp, _ = forward_logprobs(model, batch)
                seq[idx] = seq_lp.float()
                for b, i in enumerate(idx):
                    row = tok_lp[b][batch.response_mask[b].bool()].float()
                    tok[i, : len(row)] = row
                if progress is not None:
                    progress(len(idx))
    finally:
        model.train(was)
    if world > 1:
        seq, tok = reduce_sum(seq), reduce_sum(tok)
    seq, tok = seq.cpu(), tok.cpu()
    return seq, [tok[i, : len(e.response_ids)].clone() for i, e in enumerate(examples)]


def load_or_compute(cache_root: Path, key: str, model, examples: list[Encoded], pad_id: int, batch_size: int, *,
                    tokens: bool, disable_adapter: bool, dist=None, progress=None) -> ReferenceScores:
    """Return cached reference scores when the key matches, else compute (sharded across processes
    when ``dist`` has several) and cache them. Every process gets the same scores."""
    folder = cache_root / f"ref-{key[:24]}"
    if dist is not None:
        dist.wait()  # every process looks at the cache before any of them writes it
    meta = read_entry(folder)
    hit = meta is not None and meta.get("key") == key and meta.get("count") == len(examples) \
        and bool(meta.get("tokens") or not tokens)
    if dist is not None and dist.world > 1:  # all processes must agree (node-local caches may differ)
        flag = torch.tensor([float(hit)], device=next(model.parameters()).device)
        hit = int(dist.reduce_sum(flag).item()) == dist.world
    if hit:
        return _read(folder, key, len(examples), tokens)
    t = time.perf_counter()
    shard = {"rank": dist.rank, "world": dist.world, "reduce_sum": dist.reduce_sum} if dist is not None else {}
    seq, tok = compute_reference(model, examples, pad_id, batch_size, disable_adapter=disable_adapter,
                                 progress=progress, **shard)
    seconds = time.perf_counter() - t
    if dist is None or dist.is_main:
        lengths = torch.tensor([0] + [len(x) for x in tok], dtype=torch.long)

        def build(tmp: Path) -> None:
            save_file({"seq_logps": seq, "token_logps": torch.cat(tok) if tok else torch.zeros(0),
                       "offsets": lengths.cumsum(0)}, tmp / "reference.safetensors")
            write_json(tmp / "meta.json", {"key": key, "count": len(examples), "tokens": True, "seconds": seconds})

        if not write_entry(folder, build):  # another run published the same entry first: use that copy
            winner = _read(folder, key, len(examples), True)
            seq, tok = winner.seq_logps, winner.token_logps
    if dist is not None:
        dist.wait()
    return ReferenceScores(seq, tok if tokens else None, key, False, seconds)


def _read(folder: Path, key: str, count: int, tokens: bool) -> ReferenceScores:
    data = load_file(folder / "reference.safetensors")
    tok = None
    if tokens:
        offsets = data["offsets"].tolist()
        tok = [data["token_logps"][offsets[i] : offsets[i + 1]] for i in range(count)]
    return ReferenceScores(data["seq_logps"], tok, key, True, 0.0)
