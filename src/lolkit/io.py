"""File I/O with two guarantees: outputs appear whole or not at all, inputs fail with file + line.

Every writer goes through :func:`atomic_path`: the data is written to a hidden temporary file in
the destination's directory and moved into place with ``os.replace`` once complete, so a killed
process never leaves a partial output under the real name.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import LolkitError, data_error

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds."""
    dest = Path(path)
    prefix = f".{dest.name}.tmp-"
    if not is_dir and dest.is_dir():
        raise LolkitError(f"{dest}: is a directory; cannot write a file there")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=dest.parent)
            os.close(fd)
            tmp = Path(name)
    except PermissionError:
        raise LolkitError(f"{dest.parent}: directory is not writable (writing {dest.name})") from None
    try:
        yield tmp
        if is_dir:
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 directories
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dest)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs the usual mode
            os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_output(path: str | os.PathLike, *, is_dir: bool = False, what: str = "--output") -> Path:
    """Refuse, before any work is done, an output that cannot be written: a file path that names a
    directory, a directory path that names a file, or a destination whose nearest existing folder is not
    writable. Returns the path."""
    p = Path(path)
    if p.is_dir() and not is_dir:
        raise LolkitError(f"{p}: {what} names a directory; give a file path")
    if p.exists() and is_dir and not p.is_dir():
        raise LolkitError(f"{p}: {what} names a file; give a directory")
    folder = p if is_dir else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise LolkitError(f"{folder}: {what} lies under a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LolkitError(f"{folder}: directory is not writable ({what} {p})")
    return p


def child_path(root: str | os.PathLike, name: str | os.PathLike, what: str | None = None) -> Path:
    """``root / name`` for a ``name`` taken from a config or an option, refusing absolute names and any
    ``..`` that would climb out of ``root`` — a config value never decides where a write lands outside
    the directory it is meant for."""
    raw = str(name)
    p = Path(raw)
    parts = p.parts
    if not raw.strip() or p.is_absolute() or raw.startswith("~") or ".." in parts or "\\" in raw:
        label = what or repr(raw)
        raise LolkitError(f"{label} would escape the {Path(root).as_posix()}/ directory: "
                          "use a plain relative name (no '..', no absolute path)")
    return Path(root) / p


def recover_partial(folder: str | os.PathLike) -> list[str]:
    """Tidy ``folder`` after a killed writer: remove the temporaries of :func:`atomic_path`, and put back
    a directory that a kill caught between its two renames (old moved aside, new not yet in place).
    Only for a folder no live process is writing to (a resumed run). Returns what it changed."""
    root = Path(folder)
    done: list[str] = []
    if not root.is_dir():
        return done
    for p in sorted(root.iterdir()):
        name = p.name
        if not name.startswith(".") or (".tmp-" not in name and ".old-" not in name):
            continue
        if ".old-" in name:
            dest = root / name[1 : name.rindex(".old-")]
            if not dest.exists():
                os.replace(p, dest)
                done.append(f"restored {dest.name}")
                continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(f"removed {name}")
    return done


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace non-finite floats with None: JSON has no NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(_clean(obj), ensure_ascii=False, default=_json_default, allow_nan=False, **kw)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
            n += 1
    return n


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise LolkitError(f"{p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LolkitError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise data_error(str(p), e.lineno, None, f"invalid JSON ({e.msg}, column {e.colno})") from None


GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"


def open_maybe_gzip(path: Path):
    """A binary file handle on ``path``, decompressing gzip transparently. The content decides (its
    magic bytes), not the name — but a name ending in ``.gz`` must hold gzip, or the file is refused."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == GZIP_MAGIC:
        return gzip.open(path, "rb")
    if path.name.endswith(".gz"):
        raise LolkitError(f"{path}: not a gzip file (the name ends in .gz, but the content is not gzip-compressed)")
    return open(path, "rb")


# what a damaged gzip stream raises while it is read
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def gzip_error(path: Path, e: Exception) -> LolkitError:
    if isinstance(e, EOFError):
        return LolkitError(f"{path}: truncated gzip file (it ends before the end of its compressed stream)")
    return LolkitError(f"{path}: corrupt gzip file ({e})")


def iter_jsonl(path: str | os.PathLike, allow_empty: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad lines raise with file and line.

    A UTF-8 byte-order mark at the start of the file is skipped (editors on Windows write one), and a
    gzip-compressed file (``.jsonl.gz``, as corpora are published) is read as its decompressed text."""
    p = Path(path)
    if not p.exists():
        raise LolkitError(f"{p}: file not found")
    if p.is_dir():
        raise LolkitError(f"{p}: is a directory, expected a JSONL file")
    seen = False
    fh = open_maybe_gzip(p)
    try:
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise data_error(str(p), lineno, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise data_error(str(p), lineno, None, f"invalid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise data_error(str(p), lineno, None, f"expected a JSON object, got {type(obj).__name__}")
                seen = True
                yield lineno, obj
    except GZIP_ERRORS as e:
        raise gzip_error(p, e) from None
    if not seen and not allow_empty:
        raise LolkitError(f"{p}: file is empty (no JSON lines)")


def read_jsonl(path: str | os.PathLike, allow_empty: bool = False) -> list[tuple[int, dict]]:
    return list(iter_jsonl(path, allow_empty))


def iter_progress(path: Path, fingerprint: str) -> Iterator[dict]:
    """The entries of a resumable command's progress sidecar written for ``fingerprint``; a line torn
    by a kill is skipped (its piece of work is simply done again)."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict) and obj.get("fingerprint", fingerprint) == fingerprint:
                yield obj
