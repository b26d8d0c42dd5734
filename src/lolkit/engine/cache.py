"""The engine's on-disk cache (``$LOLKIT_CACHE/engine/``): entries that are verified before they are read
and published atomically when several processes build the same one at once.

An entry is a directory ``<kind>-<key>/`` holding ``meta.json`` (the full key), its tensors and
``manifest.json`` (every file's size and SHA-256, written last). A reader trusts an entry only when its
manifest verifies and its key matches; a damaged entry is reported in one line and rebuilt. Writers
build under a private hidden name and rename it into place; when two finish together the first rename
wins and the other writer discards its copy and reads the winner's (:func:`lolkit.io.publish_dir`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..io import publish_dir, read_json, recover_partial, staging_dir, verify_manifest, warn


def read_entry(folder: Path) -> dict | None:
    """The entry's ``meta.json`` when the entry exists and verifies; None otherwise (a damaged entry is
    reported). Leftovers of this machine's killed writers beside it are removed on the way."""
    recover_partial(folder.parent, only=folder.name, shared=True)
    if not folder.exists():
        return None
    problem = verify_manifest(folder)
    if problem:
        warn(f"engine cache {folder} fails verification ({problem}): computing it again")
        return None
    meta = read_json(folder / "meta.json")
    return meta if isinstance(meta, dict) else None


def write_entry(folder: Path, build: Callable[[Path], None]) -> bool:
    """Build the entry with ``build(tmp)`` (tensors and ``meta.json``) and publish it. Returns False when
    another process published the same entry first (that copy is kept, ours discarded)."""
    tmp = staging_dir(folder)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, folder, manifest=True, shared=True)
