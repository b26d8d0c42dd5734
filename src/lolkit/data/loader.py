"""Every ``--data``-like input, whatever its format, as numbered JSON-like rows — and the writers back.

A *spec* names the data:

* a file: JSON lines (``.jsonl``, also gzip-compressed ``.jsonl.gz``), a JSON array or JSON lines
  (``.json``), CSV / TSV, Parquet, or an Arrow stream file (``.arrow``, as ``datasets`` writes them);
* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* a folder of data files, as a Hub dataset repository is downloaded (``data/train-00000-of-00001.parquet``,
  ``plain_text/test-….parquet``, ``harmless-base/train.jsonl.gz``): the split is the file name before
  its shard number or first dot;
* a Hub dataset id ``org/name``, read from the local Hugging Face datasets cache only — never from
  the network, so an uncached id fails at once.

``SPEC:split`` picks a split (``org/name:config:split`` also a configuration); a source with one split
needs none, one with several must be told which. Rows come as ``(label, number, object)``: the label is
the file (or split) to name in an error, the number the line for JSON lines and the 1-based row for
every other format (:class:`Row`, which prints as ``row N``).

JSON is read by lolkit itself, line by line: the data contract's errors name the line, and JSON keeps
the types it was written with. The table formats go through Hugging Face ``datasets`` (``streaming``
for files, so nothing is copied into a cache; memory-mapped Arrow for saved and cached datasets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LolkitError, data_error
from ..io import (
    BOM,
    GZIP_ERRORS,
    atomic_path,
    check_output,
    dumps,
    gzip_error,
    iter_jsonl,
    open_maybe_gzip,
    write_jsonl,
)


class Row(int):
    """A 1-based row number of a non-line format. Formatted it reads `` row N``, so every message built
    as ``f"{path}:{line}: …"`` says ``data.parquet: row 3: …`` for a table and ``data.jsonl:3: …`` for
    JSON lines, without each caller knowing the format."""

    def __format__(self, spec: str) -> str:
        return f" row {int(self)}" if not spec else format(int(self), spec)


def unit_of(n: int) -> str:
    """``line N`` or ``row N``, for messages that refer back to an earlier record."""
    return f"row {int(n)}" if isinstance(n, Row) else f"line {n}"


# Names of data files inside a folder, by format (the longest suffix wins).
_SUFFIXES = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".ndjson": "jsonl", ".json": "json", ".json.gz": "json",
             ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".parquet": "parquet", ".arrow": "arrow"}
# Files `datasets` and `transformers` keep beside data that are not data.
_NOT_DATA = {"dataset_info.json", "dataset_dict.json", "state.json", "config.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}
_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Fields a CSV cell holds as JSON text (lists and objects have no CSV form of their own).
_JSON_CELLS = ("responses", "rewards", "meta", "messages", "completions", "labels")
_NUMBER_CELLS = ("reward", "chosen_reward", "rejected_reward")
_TEXT_CELLS = ("prompt", "chosen", "rejected", "completion")


def format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


@dataclass
class Source:
    """One split of one dataset: where errors point (``label``) and how to read its rows."""

    label: str
    format: str
    rows: Callable[[], Iterator[tuple[str, int, dict]]]  # (label of the file, line or Row, object)
    files: tuple[Path, ...] = ()  # the bytes behind it, for :func:`source_digest`


# ------------------------------------------------------------------------------------------- opening


def open_source(spec: str | os.PathLike, allow_empty: bool = False) -> Source:
    """The rows behind ``spec`` (one split), or a one-line error saying what is missing."""
    splits, chosen, base = _resolve(str(spec), allow_empty)
    if chosen is None:
        if len(splits) == 1:
            return next(iter(splits.values()))
        raise LolkitError(f"{base}: holds the splits {', '.join(splits)}; name one as {base}:SPLIT")
    return _pick(splits, chosen, base)


def open_splits(spec: str | os.PathLike, allow_empty: bool = False) -> dict[str, Source]:
    """Every split behind ``spec`` by name (just the named one for ``SPEC:split``), in the source's order; a
    single file or dataset is the split its name says (:func:`split_of`)."""
    splits, chosen, base = _resolve(str(spec), allow_empty)
    return splits if chosen is None else {chosen: _pick(splits, chosen, base)}


def _pick(splits: dict[str, Source], chosen: str, base: str) -> Source:
    if chosen not in splits:
        raise LolkitError(f"{base}: no split {chosen!r} (it has: {', '.join(splits)})")
    return splits[chosen]


def _split_suffix(spec: str) -> tuple[str, str | None]:
    """``PATH:split`` → (PATH, split) when PATH exists; an existing path is never split."""
    if Path(spec).exists():
        return spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail and Path(head).exists():
        return head, tail
    return spec, None


def _resolve(spec: str, allow_empty: bool) -> tuple[dict[str, Source], str | None, str]:
    """(splits, the split ``spec`` names or None, the name of the dataset for messages)."""
    path_s, split = _split_suffix(spec)
    p = Path(path_s)
    if p.is_file():
        if split is not None:
            raise LolkitError(f"{p}: a single file has no splits (drop ':{split}')")
        return {split_of(p): _file_source(p, str(p), allow_empty)}, None, path_s
    if p.is_dir():
        if _is_saved_dataset(p):
            return _disk_splits(p, allow_empty), split, path_s
        return _folder_splits(p, allow_empty), split, path_s
    if _looks_like_hub_id(spec):
        return _hub_splits(spec)
    raise LolkitError(f"{p}: file not found")


def _looks_like_hub_id(spec: str) -> bool:
    repo = spec.split(":", 1)[0]
    return bool(_HUB_ID.match(repo)) and format_of(Path(repo)) is None and not Path(repo.split("/")[0]).exists()


# --------------------------------------------------------------------------------------------- files


def _file_source(p: Path, label: str, allow_empty: bool = False) -> Source:
    fmt = format_of(p) or "jsonl"  # a file of another name: JSON lines, lolkit's own format
    if fmt == "json":
        fmt = "json" if _first_char(p) == "[" else "jsonl"
    if fmt == "jsonl":
        return Source(label, fmt, lambda: ((label, n, obj) for n, obj in iter_jsonl(p, allow_empty)), (p,))
    if fmt == "json":
        return Source(label, fmt, lambda: _json_array_rows(p, label, allow_empty), (p,))
    if fmt in ("csv", "tsv"):
        return Source(label, fmt, lambda: _csv_rows(p, label, "\t" if fmt == "tsv" else ",", allow_empty), (p,))
    return Source(label, fmt, lambda: _table_file_rows(p, label, fmt, allow_empty), (p,))


def _first_char(p: Path) -> str:
    """The first non-blank character of a (possibly gzip-compressed) text file."""
    try:
        with open_maybe_gzip(p) as fh:
            head = fh.read(4096)
    except GZIP_ERRORS as e:
        raise gzip_error(p, e) from None
    return head.removeprefix(BOM).lstrip()[:1].decode("utf-8", "replace")


def _json_array_rows(p: Path, label: str, allow_empty: bool) -> Iterator[tuple[str, int, dict]]:
    try:
        with open_maybe_gzip(p) as fh:
            raw = fh.read()
    except GZIP_ERRORS as e:
        raise gzip_error(p, e) from None
    try:
        data = json.loads(raw.removeprefix(BOM).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise LolkitError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise data_error(label, e.lineno, None, f"invalid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, list):
        raise LolkitError(f"{p}: expected a JSON array of records (or one JSON object per line)")
    if not data and not allow_empty:
        raise LolkitError(f"{p}: file is empty (an empty JSON array)")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise data_error(label, Row(i), None, f"expected a JSON object, got {type(obj).__name__}")
        yield label, Row(i), obj


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """Import ``datasets`` offline and keep its progress bars and log lines off stderr: a failed
    command prints one line, and reading a local file never reaches for the network."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read when datasets is imported; only datasets obeys it
    import datasets

    was_enabled = datasets.utils.logging.is_progress_bar_enabled()
    level = datasets.utils.logging.get_verbosity()
    offline, torch_available = datasets.config.HF_HUB_OFFLINE, datasets.config.TORCH_AVAILABLE
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL + 10)
    datasets.config.HF_HUB_OFFLINE = True  # also when datasets was imported, online, before lolkit ran
    # a streamed dataset imports torch (3-5 s) only to share a counter with DataLoader workers, which
    # lolkit never uses: reading a Parquet file should cost what reading it costs
    datasets.config.TORCH_AVAILABLE = "torch" in sys.modules
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.TORCH_AVAILABLE = offline, torch_available
        datasets.utils.logging.set_verbosity(level)
        if was_enabled:
            datasets.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A throw-away cache folder for a streamed read: ``datasets`` leaves lock files in its cache even when
    it copies nothing, and reading a file should leave no trace in the user's Hugging Face cache."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lolkit-read-") as tmp:
        yield tmp


def _table_error(label: str, e: Exception) -> LolkitError:
    msg = " ".join(str(e).split()) or type(e).__name__
    return LolkitError(f"{label}: cannot be read ({msg})")


def _csv_rows(p: Path, label: str, delimiter: str, allow_empty: bool) -> Iterator[tuple[str, int, dict]]:
    import csv

    # the header names the columns; every cell is then read as text, so "007" stays "007" and an
    # empty cell stays empty instead of pandas guessing a number or NaN
    try:
        with open_maybe_gzip(p) as fh:
            first = fh.readline().removeprefix(BOM).decode("utf-8")
    except GZIP_ERRORS as e:
        raise gzip_error(p, e) from None
    except UnicodeDecodeError as e:
        raise LolkitError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    header = next(csv.reader([first], delimiter=delimiter), [])
    if not [h for h in header if h.strip()]:
        raise LolkitError(f"{p}: file is empty (expected a header row naming the columns)")
    with _quiet_datasets() as datasets, _scratch() as scratch:
        features = datasets.Features({h: datasets.Value("string") for h in header})
        try:
            ds = datasets.load_dataset("csv", data_files=str(p), split="train", streaming=True, features=features,
                                       delimiter=delimiter, keep_default_na=False, na_filter=False, cache_dir=scratch)
            n = 0
            for n, row in enumerate(_pylist(ds), start=1):
                yield label, Row(n), _csv_cells(label, Row(n), row)
        except LolkitError:
            raise
        except Exception as e:  # pandas and pyarrow raise many types for a malformed file
            raise _table_error(label, e) from None
    if n == 0 and not allow_empty:
        raise LolkitError(f"{p}: file is empty (a header and no rows)")


def _csv_cells(label: str, row: Row, cells: dict[str, str | None]) -> dict:
    """A CSV row as a record: empty cells are absent, reward cells numbers, list and object fields
    JSON text, and a prompt / chosen / rejected / completion cell holding a JSON list of messages
    a conversation."""
    out: dict[str, Any] = {}
    for key, text in cells.items():
        if text is None or text == "":
            continue
        if key in _NUMBER_CELLS:
            try:
                out[key] = float(text)
            except ValueError:
                raise data_error(label, row, key, f"expected a number, got {text!r}") from None
        elif key in _JSON_CELLS:
            try:
                out[key] = json.loads(text)
            except json.JSONDecodeError:
                raise data_error(label, row, key, "expected JSON in this cell (a list or an object)") from None
        elif key in _TEXT_CELLS and text.lstrip().startswith("[{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            out[key] = value if isinstance(value, list) and all(isinstance(m, dict) for m in value) else text
        elif key == "label" and text.strip().lower() in ("true", "false"):
            out[key] = text.strip().lower() == "true"
        else:
            out[key] = text
    return out


def _table_file_rows(p: Path, label: str, fmt: str, allow_empty: bool) -> Iterator[tuple[str, int, dict]]:
    with _quiet_datasets() as datasets, _scratch() as scratch:
        try:
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train", streaming=True, cache_dir=scratch)
            n = 0
            for n, row in enumerate(_pylist(ds), start=1):
                yield label, Row(n), _table_row(row)
        except LolkitError:
            raise
        except Exception as e:
            raise _table_error(label, e) from None
    if n == 0 and not allow_empty:
        raise LolkitError(f"{p}: file is empty (no rows)")


def _pylist(ds, batch: int = 4096) -> Iterator[dict]:
    """The rows of a ``datasets`` dataset (streamed or mapped) as Python dicts, converted a batch of Arrow
    rows at a time: some thirty times faster than iterating the dataset example by example."""
    for table in ds.with_format("arrow").iter(batch_size=batch):
        yield from table.to_pylist()


def _table_row(row: dict) -> dict:
    """A table row as a record: a null cell is an absent field (a column exists in every row of a
    table, a field only where it was written), also one level down, in ``meta`` and ``rewards``."""
    return {k: ({a: b for a, b in v.items() if b is not None} if isinstance(v, dict) else v)
            for k, v in row.items() if v is not None}


# ------------------------------------------------------------------------------------------- folders


def _disk_splits(p: Path, allow_empty: bool) -> dict[str, Source]:
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(p))
        except Exception as e:
            raise LolkitError(f"{p}: not a readable dataset saved with save_to_disk "
                              f"({' '.join(str(e).split())})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return {name: _dataset_source(ds, f"{p}:{name}", allow_empty) for name, ds in loaded.items()}
    return {split_of(p): _dataset_source(loaded, str(p), allow_empty)}


def _dataset_source(ds, label: str, allow_empty: bool = False) -> Source:
    def rows() -> Iterator[tuple[str, int, dict]]:
        if len(ds) == 0 and not allow_empty:
            raise LolkitError(f"{label}: no rows")
        for n, row in enumerate(_pylist(ds), start=1):
            yield label, Row(n), _table_row(row)

    files = tuple(Path(f["filename"]) for f in getattr(ds, "cache_files", []) or [])
    return Source(label, "arrow", rows, files)


def split_of(f: Path) -> str:
    """The split a data file holds, by its name: ``train-00000-of-00002.parquet`` and ``train.jsonl.gz`` → train."""
    m = _SHARD.match(f.name)
    return m.group("split") if m else f.name.split(".", 1)[0]


def _folder_splits(p: Path, allow_empty: bool) -> dict[str, Source]:
    """A folder of data files: split name → the files of that split (shards in name order)."""
    groups: dict[str, list[Path]] = {}
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if not f.is_file() or any(part.startswith(".") for part in rel.parts) or f.name in _NOT_DATA:
            continue
        if format_of(f) is None:
            continue
        groups.setdefault(split_of(f), []).append(f)
    if not groups:
        raise LolkitError(f"{p}: is a directory, but holds no dataset (neither a save_to_disk folder nor data "
                          f"files: {', '.join(sorted(set(_SUFFIXES)))})")

    def source(split: str, files: list[Path]) -> Source:
        parts = [_file_source(f, str(f), allow_empty) for f in files]

        def rows() -> Iterator[tuple[str, int, dict]]:
            for part in parts:
                yield from part.rows()

        return Source(str(files[0]) if len(files) == 1 else f"{p}:{split}", "folder", rows, tuple(files))

    return {split: source(split, files) for split, files in groups.items()}


# ----------------------------------------------------------------------------------------------- Hub


def hub_cache_dir() -> str:
    with _quiet_datasets() as datasets:
        return os.path.expanduser(os.environ.get("HF_DATASETS_CACHE") or str(datasets.config.HF_DATASETS_CACHE))


def _hub_splits(spec: str) -> tuple[dict[str, Source], str | None, str]:
    repo, *rest = spec.split(":")
    if len(rest) > 2:
        raise LolkitError(f"{spec}: expected org/name, org/name:SPLIT or org/name:CONFIG:SPLIT")
    cache = hub_cache_dir()
    config: str | None = None
    split: str | None = None
    loaded = None
    if len(rest) == 2:
        config, split = rest
    elif rest:  # org/name:X is a configuration when one of that name is cached, else a split
        loaded = _load_cached(repo, rest[0], cache)
        config, split = (rest[0], None) if loaded is not None else (None, rest[0])
    if loaded is None:
        loaded = _load_cached(repo, config, cache)
    if loaded is None:
        raise LolkitError(f"{repo}: not a local file or folder, and not in the Hugging Face datasets cache "
                          f"({cache}); lolkit reads the Hub offline: load it once with "
                          f"datasets.load_dataset({repo!r}) where there is network, or pass its downloaded files")
    label = f"{repo}:{config}" if config else repo
    return {name: _dataset_source(ds, f"{label}:{name}") for name, ds in loaded.items()}, split, label


def _load_cached(repo: str, config: str | None, cache: str):
    """The cached DatasetDict of ``repo`` (``config``), None when it is not cached; other problems
    (several cached configurations, a damaged cache) are one-line errors."""
    with _quiet_datasets() as datasets:
        try:
            return datasets.load_dataset(repo, config, cache_dir=cache)
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError):
            return None
        except ValueError as e:
            msg = " ".join(str(e).split())
            several = re.search(r"configurations in the cache: ([^\n]*)", str(e))
            if several:
                raise LolkitError(f"{repo}: cached with several configurations ({several.group(1).strip()}); "
                                  f"name one as {repo}:CONFIG or {repo}:CONFIG:SPLIT") from None
            if "Couldn't find cache" in msg:
                return None
            raise LolkitError(f"{repo}: cannot be read from the Hugging Face datasets cache ({msg})") from None
        except Exception as e:
            raise LolkitError(f"{repo}: cannot be read from the Hugging Face datasets cache "
                              f"({' '.join(str(e).split())})") from None


def source_digest(spec: str | os.PathLike) -> str:
    """A content hash of what ``spec`` reads (its files' bytes), for resumable commands' fingerprints."""
    src = open_source(spec, allow_empty=True)
    h = hashlib.sha256(src.label.encode())
    for f in src.files:
        h.update(b"\0" + f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- writers


def output_format(path: str | os.PathLike) -> str:
    """How ``--output`` is written, from its name: ``.parquet`` → Parquet, a name ending in ``.arrow`` or
    ``/`` → a ``save_to_disk`` folder, ``.jsonl.gz`` → gzip-compressed JSON lines, otherwise JSON lines."""
    s = str(path)
    if s.endswith(("/", os.sep)) or s.lower().endswith(".arrow"):
        return "arrow"
    name = s.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        return "jsonl.gz"
    return "jsonl"


def check_records_output(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--output`` :func:`write_records` could not write: a folder (unless a
    dataset folder an ``.arrow`` / ``/`` output replaces), a file where a folder goes, an unwritable place."""
    dest = Path(str(path).rstrip("/" + os.sep))
    is_dataset = output_format(path) == "arrow" and dest.is_dir() and _is_saved_dataset(dest)
    return check_output(dest, is_dir=is_dataset)


def write_records(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write ``rows`` in the format :func:`output_format` names, atomically; returns the row count.
    Every file written here is one ``datasets.load_dataset`` (or ``load_from_disk``) reads back."""
    fmt = output_format(path)
    dest = Path(str(path).rstrip("/" + os.sep))
    if dest.is_dir() and not (fmt == "arrow" and _is_saved_dataset(dest)):
        raise LolkitError(f"{dest}: is a directory; --output names the file to write"
                          + (" (an existing folder is replaced only when it is a dataset lolkit or save_to_disk wrote)"
                             if fmt == "arrow" else ""))
    if fmt == "jsonl":
        return write_jsonl(dest, rows)
    rows = list(rows)
    if fmt == "jsonl.gz":
        import gzip

        with atomic_path(dest) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as fh:
            for row in rows:
                fh.write(dumps(row) + "\n")
        return len(rows)
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for row in rows:
        for key, values in columns.items():
            values.append(_no_empty_structs(row.get(key)))
    with _quiet_datasets() as datasets:
        try:
            ds = datasets.Dataset.from_dict(columns)
        except Exception as e:
            raise LolkitError(f"{dest}: cannot be written as {fmt}: a column mixes value types "
                              f"({' '.join(str(e).split())}); write JSON lines (.jsonl) instead") from None
        if fmt == "parquet":
            with atomic_path(dest) as tmp:
                ds.to_parquet(str(tmp))
        else:
            with atomic_path(dest, is_dir=True) as tmp:
                ds.save_to_disk(str(tmp))
    return len(rows)


def _is_saved_dataset(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def _no_empty_structs(v: Any) -> Any:
    """Parquet has no struct without fields: an empty object is written as null (read back as absent)."""
    if isinstance(v, dict):
        return {k: _no_empty_structs(x) for k, x in v.items()} or None
    if isinstance(v, list):
        return [_no_empty_structs(x) for x in v]
    return v
