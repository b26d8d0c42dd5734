"""File I/O with three guarantees: outputs appear whole or not at all, what lolkit reads back is
checked, and inputs fail with file + line.

Every writer goes through :func:`atomic_path`: the data is written to a hidden temporary
(``.NAME.tmp-<host>-<pid>-<random>``) in the destination's directory, fsynced, and moved into place with
one rename once complete, after which the directory itself is fsynced — so a killed process (or a power
cut) never leaves a partial output under the real name. A directory written with ``manifest=True``
carries ``manifest.json`` (every file's size and SHA-256, written last); :func:`verify_manifest` is what
a resume, a cache hit or a model load checks before trusting the directory.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import LolkitError, data_error

_UMASK = os.umask(0)
os.umask(_UMASK)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "lolkit-manifest/1"
# the writer's host and process are part of a temporary's name, so a cleanup can tell a dead writer's
# leftovers from a live writer's work in progress (a shared cache folder has both)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def warn(message: str) -> None:
    """One line on stderr for something the user should know but that does not stop the command."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-{_HOST}-{os.getpid()}-"


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file below ``root``, then every directory (deepest first), so that the data is on disk
    before the directory is renamed into place."""
    dirs = [root]
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            continue
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in reversed(dirs):
        _fsync_dir(d)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file below ``folder`` (size and SHA-256) in ``folder/manifest.json``. Written last:
    a directory whose manifest is missing was never completed."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST:
            files[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    (folder / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n",
                                   encoding="utf-8")


def verify_manifest(folder: str | os.PathLike) -> str | None:
    """None when every file ``folder/manifest.json`` lists is there with its recorded size and SHA-256;
    else what is wrong, in a few words (the first problem found)."""
    root = Path(folder)
    mpath = root / MANIFEST
    if not root.is_dir():
        return "missing"
    if not mpath.is_file():
        return f"no {MANIFEST} (an incomplete write, or written by an older lolkit)"
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
        files = meta["files"] if meta.get("format") == MANIFEST_FORMAT else None
        if not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return f"{MANIFEST} is damaged"
    for rel, want in files.items():
        p = root / rel
        if not p.is_file():
            return f"{rel} is missing"
        size = p.stat().st_size
        if not isinstance(want, dict) or size != want.get("size"):
            return f"{rel} has {size} bytes, {want.get('size') if isinstance(want, dict) else '?'} expected"
        if file_sha256(p) != want.get("sha256"):
            return f"{rel}: its checksum differs from {MANIFEST} (the bytes changed after it was written)"
    return None


def staging_dir(path: str | os.PathLike) -> Path:
    """A fresh hidden directory beside ``path`` to build it in (see :func:`publish_dir`)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 directories
    return tmp


def publish_dir(tmp: Path, path: str | os.PathLike, *, manifest: bool = False, shared: bool = False) -> bool:
    """Move the finished directory ``tmp`` onto ``path``: write its manifest (optional), fsync its files,
    rename, fsync the parent.

    ``shared=False`` (a run's own files): an existing ``path`` is replaced (moved aside, then removed).
    ``shared=True`` (a cache several processes may fill at once): the rename itself decides — the first
    writer's directory stays; a later writer whose rename fails because ``path`` exists keeps that copy
    when it verifies (its own copy is discarded and False is returned), and replaces it only when it is
    damaged. Returns True when ``tmp`` is now at ``path``."""
    dest = Path(path)
    try:
        if manifest:
            write_manifest(tmp)
        _fsync_tree(tmp)
        while True:
            if shared:
                try:
                    os.rename(tmp, dest)  # fails on a non-empty existing directory: no check-then-rename race
                    break
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                if verify_manifest(dest) is None:  # another writer won: use its copy
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
                damaged = dest.with_name(f".{dest.name}.old-{_HOST}-{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):  # gone already: another writer replaced it
                    os.replace(dest, damaged)
                    shutil.rmtree(damaged, ignore_errors=True)
                continue
            if not dest.exists() and not dest.is_symlink():
                os.replace(tmp, dest)
                break
            # replace a run's own directory: the old one aside first, removed once the new one is in place
            # (a kill in between leaves it under .NAME.old-*, which recover_partial puts back)
            old = dest.with_name(f".{dest.name}.old-{_HOST}-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
            break
        _fsync_dir(dest.parent)
        return True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False, manifest: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds (fsynced
    before and after the rename). ``manifest=True`` (directories) writes ``manifest.json`` last. The
    leftovers of a killed writer of the same ``path`` (not a running one's) are removed first."""
    dest = Path(path)
    if not is_dir and dest.is_dir():
        raise LolkitError(f"{dest}: is a directory; cannot write a file there")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        recover_partial(dest.parent, only=dest.name)  # a killed earlier writer's leftovers of this same output
        if is_dir:
            tmp = staging_dir(dest)
        else:
            fd, name = tempfile.mkstemp(prefix=_tmp_prefix(dest), dir=dest.parent)
            os.close(fd)
            tmp = Path(name)
    except PermissionError:
        raise LolkitError(f"{dest.parent}: directory is not writable (writing {dest.name})") from None
    if is_dir:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, dest, manifest=manifest)
        return
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs the usual mode
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
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


def _live_writer(tag: str) -> bool:
    """Whether the leftover tagged ``<host>-<pid>-…`` belongs to a process still running on this host
    (its work in progress, not a leftover). Other hosts' and untagged (older) leftovers count as dead."""
    host, _, rest = tag.partition("-")
    pid = rest.partition("-")[0]
    if host != _HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def recover_partial(folder: str | os.PathLike, *, only: str | None = None, shared: bool = False) -> list[str]:
    """Tidy ``folder`` after a killed writer: remove the temporaries of :func:`atomic_path`, and put back
    a directory that a kill caught between its two renames (old moved aside, new not yet in place).

    ``only``: just the leftovers of that one name (an output file in a folder that holds other things).
    A temporary of a writer that is still running on this machine is never touched; with
    ``shared=True`` (a cache other machines may write too) only this machine's dead writers' are.
    Returns what it changed."""
    root = Path(folder)
    done: list[str] = []
    if not root.is_dir():
        return done
    for p in sorted(root.iterdir()):
        name = p.name
        if not name.startswith("."):
            continue
        marker = ".tmp-" if ".tmp-" in name else ".old-" if ".old-" in name else None
        if marker is None:
            continue
        base, _, tag = name[1:].rpartition(marker)
        if only is not None and base != only:
            continue
        if _live_writer(tag) or (shared and not tag.startswith(f"{_HOST}-")):
            continue
        if marker == ".old-":
            dest = root / base
            if not dest.exists():
                os.replace(p, dest)
                done.append(f"restored {dest.name}")
                continue
        if p.is_dir() and not p.is_symlink():
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


def _entry_digest(entry: dict) -> str:
    return hashlib.sha256(dumps(entry, sort_keys=True).encode("utf-8")).hexdigest()


class ProgressLog:
    """A resumable command's progress file (``lolkit reward``, ``lolkit eval``): a header line naming the
    format and the fingerprint of the work, then one JSON line per finished piece of work, flushed and
    fsynced, each carrying the SHA-256 of its own content.

    Reading back keeps only the lines that verify: a line torn by a kill (the last one) is skipped
    quietly, any other line that fails its checksum — bytes changed on disk — is skipped with one
    warning, and its piece of work is simply done again. A file whose header does not match is ignored,
    and replaced by the first new entry."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self._fh = None

    def _lines(self) -> tuple[bool, list[bytes]]:
        """(whether the file starts with this work's header, its complete lines after the header)."""
        if not self.path.is_file():
            return False, []
        lines = self.path.read_bytes().split(b"\n")
        lines.pop()  # the text after the last newline: empty, or a line torn by a kill
        try:
            head = json.loads(lines[0]) if lines else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            head = None
        ok = isinstance(head, dict) and head.get("fingerprint") == self.header.get("fingerprint")
        return ok, lines[1:] if ok else []

    def entries(self) -> Iterator[dict]:
        damaged = 0
        for raw in self._lines()[1]:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                ok = obj.pop("sha256") == _entry_digest(obj)
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
                ok = False
            if ok:
                yield obj
            else:
                damaged += 1
        if damaged:
            warn(f"{self.path}: {damaged} progress line(s) fail their checksum; that work is done again")

    def append(self, entry: dict) -> dict:
        """Write ``entry`` (durably) and return it as it reads back (through JSON, as a resumed run sees it)."""
        line = dumps({**entry, "sha256": _entry_digest(entry)})
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not self._lines()[0]:  # another work's or a damaged header: start afresh
                self.path.unlink()
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._fh.tell() == 0:
                self._fh.write(dumps(self.header) + "\n")
            elif not self.path.read_bytes().endswith(b"\n"):
                self._fh.write("\n")  # end a line torn by a kill so the next entry starts clean
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        obj = json.loads(line)
        obj.pop("sha256")
        return obj

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
