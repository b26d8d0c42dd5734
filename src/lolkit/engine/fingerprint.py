"""Fingerprints that key the engine's caches: what a cached result depends on, hashed.

A cache entry is trusted only when its full key matches; anything that could change the numbers
(the model's files, the exact token ids, the dtype, the settings) is part of the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

_SAMPLE = 1 << 20  # bytes read at each sampled position of a large weight file
_POSITIONS = 16


def file_digest(path: Path) -> str:
    """SHA-256 of a file; files over 64 MiB are hashed by size and 16 sampled 1 MiB windows (a full
    read of a multi-GB checkpoint would dominate a short run; any retraining changes every window)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= 64 * _SAMPLE:
            for block in iter(lambda: fh.read(_SAMPLE), b""):
                h.update(block)
        else:
            for k in range(_POSITIONS):
                fh.seek((size - _SAMPLE) * k // (_POSITIONS - 1))
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()


def model_digest(path: str | Path) -> str:
    """Digest of a model (or adapter) directory: config, tokenizer and weight files."""
    p = Path(path)
    if not p.is_dir():  # a hub id resolved from the HF cache
        return hashlib.sha256(str(path).encode()).hexdigest()
    h = hashlib.sha256()
    if (p / "adapter_config.json").is_file():  # an adapter: its base is part of the model
        from ..models import adapter_base, resolve_model

        h.update(model_digest(resolve_model(adapter_base(str(p)))).encode())
    for f in sorted(p.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt"):
            h.update(f.name.encode())
            h.update(file_digest(f).encode())
    return h.hexdigest()


def ids_digest(seqs: Iterable[Iterable[int]]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(json.dumps(list(s)).encode())
        h.update(b"|")
    return h.hexdigest()


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
