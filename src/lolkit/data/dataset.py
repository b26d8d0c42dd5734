"""From a records file (or a built-in task) to encoded training examples and validation prompts.

A corpus is validated and tokenised once, then memory-mapped:

1. the validated records (:mod:`lolkit.data.schema`) are streamed into an Arrow file,
   ``$LOLKIT_CACHE/datasets/records-<key>.arrow``, keyed on the file's bytes;
2. ``datasets.map`` renders and tokenises every prompt and response in parallel (``data.num_proc``)
   into ``tokens-<key>.arrow``, keyed on the records and the tokenizer's files. It stores the *full*
   token ids (responses without their EOS), so no length setting is part of the key: any setting
   reads the same entry, and none can read a stale one.

A second run on the same file with the same tokenizer reads both files and tokenises nothing.
Examples are cut to the run's lengths when they are read (:func:`lolkit.data.tokenize.cut_pair`),
and only small per-example index arrays live in Python. Unset lengths come from the data (the
longest prompt and response), capped by the model's context; every cut is counted per split and
``data.truncation`` decides what happens to it (:mod:`lolkit.data.tokenize`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from pathlib import Path

import numpy as np

from ..errors import LolkitError, data_error, warn
from .loader import Row, unit_of
from .schema import (
    Record,
    check_nonnegative,
    iter_records,
    load_prompts,
    parse_record,
    require_rewards,
    unique_prompts,
)
from .tokenize import (
    Encoded,
    Lengths,
    Truncation,
    check_policy,
    cut_error,
    cut_pair,
    encode_texts,
    pair_lengths,
    prompt_text,
    render_prompt,
)

# Bump when the stored columns or their meaning change: old cache entries are then never read.
RECORDS_FORMAT = "lolkit-records/2"
TOKENS_FORMAT = "lolkit-tokens/1"
WRITE_BATCH = 10_000  # records per Arrow record batch while streaming a file in
AUTO_PARALLEL = 50_000  # data.num_proc = 0: one process below this many records (a pool costs ~1 s)


# --------------------------------------------------------------------------------------------------
# the cache: validated records and their token ids, memory-mapped Arrow files
# --------------------------------------------------------------------------------------------------
def datasets_cache() -> Path:
    from ..models import cache_dir

    return cache_dir() / "datasets"


def source_key(source: str) -> str | None:
    """The loader's digest of every byte a data source holds (:func:`lolkit.data.loader.source_digest`);
    None for a source without files behind it (it is then hashed record by record as it is read)."""
    from .loader import open_source, source_digest

    return source_digest(source) if open_source(source, allow_empty=True).files else None


def tokenizer_digest(tokenizer) -> str:
    """Digest of a tokenizer's saved files (vocabulary, merges, normaliser, special tokens, chat
    template): two tokenizers that encode differently never share a cache entry."""
    from ..io import file_sha256

    h = hashlib.sha256(type(tokenizer).__name__.encode())
    with tempfile.TemporaryDirectory(prefix="lolkit-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                h.update(f"{f.name}\0{file_sha256(f)}".encode())
    return h.hexdigest()


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _records_schema():
    import pyarrow as pa

    return pa.schema([("kind", pa.string()), ("prompt", pa.string()), ("prompt_hash", pa.float64()),
                      ("responses", pa.list_(pa.string())), ("rewards", pa.list_(pa.float64())),
                      ("components", pa.string()), ("id", pa.string()), ("meta", pa.string()), ("line", pa.int64()),
                      ("row", pa.bool_())])


def prompt_hash(prompt) -> float:
    """Where a prompt falls in [0, 1]: the validation hold-out takes the prompts below data.val_fraction
    (a pure function of the prompt's text, so a prompt and all its responses land on the same side)."""
    return int(hashlib.sha256(prompt_text(prompt).encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


def _row(rec: Record) -> dict:
    comps = rec.components if any(rec.components) else None
    return {"kind": rec.kind, "prompt": json.dumps(rec.prompt, ensure_ascii=False), "prompt_hash": prompt_hash(rec.prompt),
            "responses": rec.responses, "rewards": rec.rewards,
            "components": None if comps is None else json.dumps(comps, ensure_ascii=False), "id": rec.id,
            "meta": json.dumps(rec.meta, ensure_ascii=False) if rec.meta else None, "line": int(rec.line),
            "row": isinstance(rec.line, Row)}


def _write_records(records: Iterable[Record], dest: Path, content: hashlib._Hash | None = None) -> int:
    """Stream records into an Arrow file (written whole or not at all); optionally hash their rows."""
    import pyarrow as pa

    from ..io import atomic_path

    schema = _records_schema()
    n = 0
    with atomic_path(dest) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict] = []

        def flush() -> None:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            batch.clear()

        for rec in records:
            row = _row(rec)
            if content is not None:
                content.update(json.dumps(row, sort_keys=True).encode())
            batch.append(row)
            n += 1
            if len(batch) >= WRITE_BATCH:
                flush()
        if batch or not n:
            flush()
    return n


def record_table(source: str, records: Iterable[Record] | None = None, kind=None):
    """The validated records of ``source`` as a memory-mapped ``datasets.Dataset`` and its cache key.
    ``records`` (an iterable of :class:`Record`) replaces reading the file, e.g. for a built-in task."""
    from datasets import Dataset

    root = datasets_cache()
    root.mkdir(parents=True, exist_ok=True)
    digest = source_key(source) if records is None else None
    if digest is not None:
        key = _key(RECORDS_FORMAT, digest, kind)
        path = root / f"records-{key}.arrow"
        if not path.is_file():
            _write_records((rec for _, rec in iter_records(source, kind)), path)
        return Dataset.from_file(str(path)), key
    # no file to fingerprint: stream the records into a scratch file, then key them on their content
    content = hashlib.sha256()
    stream = records if records is not None else (rec for _, rec in iter_records(source, kind))
    fd, scratch = tempfile.mkstemp(prefix=".records-", suffix=".arrow", dir=root)
    os.close(fd)
    try:
        _write_records(stream, Path(scratch), content)
        key = _key(RECORDS_FORMAT, content.hexdigest(), kind)
        path = root / f"records-{key}.arrow"
        if path.is_file():
            os.unlink(scratch)
        else:
            os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return Dataset.from_file(str(path)), key


def record_at(table, i: int) -> Record:
    """Row ``i`` of a record table as a :class:`Record`."""
    row = table[int(i)]
    prompt = json.loads(row["prompt"])
    n = len(row["responses"])
    comps = json.loads(row["components"]) if row["components"] else [{} for _ in range(n)]
    return Record(row["kind"], prompt, list(row["responses"]), list(row["rewards"]), comps, row["id"],
                  json.loads(row["meta"]) if row["meta"] else {}, Row(row["line"]) if row["row"] else row["line"])


def _tokenise(batch: dict, tokenizer) -> dict:
    """``datasets.map`` body: rendered prompt, its full ids (special tokens included), and the full
    ids of every response (no special tokens, no EOS: EOS and the cuts are applied when read)."""
    rendered = [render_prompt(tokenizer, json.loads(p)) for p in batch["prompt"]]
    prompt_ids = encode_texts(tokenizer, rendered, True)
    flat = [r for rs in batch["responses"] for r in rs]
    ids = encode_texts(tokenizer, flat, False)
    grouped, k = [], 0
    for rs in batch["responses"]:
        grouped.append(ids[k : k + len(rs)])
        k += len(rs)
    return {"rendered": rendered, "prompt_ids": prompt_ids, "response_ids": grouped}


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def auto_num_proc(setting: int, n: int) -> int:
    if setting > 0:
        return setting
    return 1 if n < AUTO_PARALLEL else max(1, min(8, os.cpu_count() or 1))


def tokenise_table(table, key: str, tokenizer, num_proc: int = 0, tok_digest: str | None = None):
    """Token ids of every record of a record table (a ``datasets.map``, cached by the records' key
    and the tokenizer's digest)."""
    import pyarrow.compute as pc
    from datasets import Features, List, Value

    if not getattr(tokenizer, "chat_template", None):
        conversational = pc.any(pc.starts_with(table.data.column("prompt"), "[")).as_py()
        if conversational:  # found before the workers start, as one line
            render_prompt(tokenizer, [{"role": "user", "content": ""}])
    tkey = _key(TOKENS_FORMAT, key, tok_digest or tokenizer_digest(tokenizer))
    procs = min(auto_num_proc(num_proc, len(table)), max(1, len(table)))  # datasets pools even 1 process
    features = Features({"rendered": Value("string"), "prompt_ids": List(Value("int32")),
                         "response_ids": List(List(Value("int32")))})
    with _quiet_datasets():
        return table.map(_tokenise, batched=True, batch_size=1000, fn_kwargs={"tokenizer": tokenizer},
                         num_proc=procs if procs > 1 else None,
                         remove_columns=table.column_names, features=features, new_fingerprint=tkey,
                         cache_file_name=str(datasets_cache() / f"tokens-{tkey}.arrow"))


class Corpus:
    """A record table and its token table, with the per-record arrays training needs: prompt lengths,
    response lengths (flat) and offsets, rewards (NaN where absent)."""

    def __init__(self, source: str, records, tokens):
        import pyarrow.compute as pc

        self.source, self.records, self.tokens = source, records, tokens
        # lengths and offsets come from the lists' offset buffers: no text or token is read into memory
        counts = pc.list_value_length(records.data.column("responses")).to_numpy(zero_copy_only=False)
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # record i: offsets[i]:offsets[i+1]
        self.rewards = pc.list_flatten(records.data.column("rewards")).fill_null(float("nan")).to_numpy(
            zero_copy_only=False).astype(np.float64)
        self.prompt_len = pc.list_value_length(tokens.data.column("prompt_ids")).to_numpy(
            zero_copy_only=False).astype(np.int64)
        self.response_len = pc.list_value_length(pc.list_flatten(tokens.data.column("response_ids"))).to_numpy(
            zero_copy_only=False).astype(np.int64)
        self.prompt_hash = records.data.column("prompt_hash").to_numpy()
        self.kinds = records.data.column("kind").unique().to_pylist()

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> Record:
        return record_at(self.records, i)

    def response_text(self, i: int, j: int) -> str:
        return self.records.data.column("responses")[int(i)][int(j)].as_py()

    def line(self, i: int) -> int:
        """Record ``i``'s line (JSON lines) or :class:`Row` (other formats), for messages."""
        row = self.records.select_columns(["line", "row"])[int(i)]
        return Row(row["line"]) if row["row"] else row["line"]

    def counts(self, rows: np.ndarray) -> np.ndarray:
        return self.offsets[rows + 1] - self.offsets[rows]

    def responses_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every response of ``rows``, in order: (its record, its index within the record, its flat index)."""
        counts = self.counts(rows)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        owner = np.repeat(rows, counts)
        return owner, within, self.offsets[owner] + within


def load_corpus(source: str, tokenizer, *, records: Iterable[Record] | None = None, num_proc: int = 0) -> Corpus:
    """Validate and tokenise a data source once (cached; see the module docstring)."""
    table, key = record_table(source, records)
    return Corpus(source, table, tokenise_table(table, key, tokenizer, num_proc))


# --------------------------------------------------------------------------------------------------
# training data
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One (prompt, response) pair to train on."""

    record: int  # index of its record in the corpus
    response: int  # index of the response within the record
    prompt: str  # rendered prompt text (chat template applied)
    reward: float | None
    encoded: Encoded
    corpus: Corpus | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """The response text (read from the record table when asked: training never needs it)."""
        return self.corpus.response_text(self.record, self.response)


class Examples:
    """The training examples, read from the memory-mapped token table and cut on access."""

    def __init__(self, data: TrainData):
        self._d = data
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self._d.ex_record)

    def _tokens(self, rec: int) -> dict:
        row = self._cache.get(rec)
        if row is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            row = self._cache[rec] = self._d.corpus.tokens[rec]
        return row

    def _make(self, k: int, row: dict) -> Example:
        d = self._d
        rec, j = int(d.ex_record[k]), int(d.ex_response[k])
        enc = cut_pair(row["prompt_ids"], row["response_ids"][j], d.eos_id, d.max_prompt_len, d.max_response_len)
        r = d.ex_reward[k]
        return Example(rec, j, row["rendered"], None if np.isnan(r) else float(r), enc, d.corpus)

    def __getitem__(self, k: int) -> Example:
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._make(k, self._tokens(int(self._d.ex_record[k])))

    def __iter__(self) -> Iterator[Example]:
        """In order, reading the token table a block of records at a time (examples are in record order)."""
        d, n, step = self._d, len(self), 1024
        for start in range(0, n, step):
            recs = d.ex_record[start : start + step]
            lo, hi = int(recs.min()), int(recs.max()) + 1
            block = d.corpus.tokens.data.table.slice(lo, hi - lo).to_pydict() if hi - lo <= 8 * step else None
            for k in range(start, min(start + step, n)):
                rec = int(d.ex_record[k]) - lo
                row = ({c: block[c][rec] for c in block} if block is not None else self._tokens(int(d.ex_record[k])))
                yield self._make(k, row)


@dataclass
class TrainData:
    """Encoded examples, and the units a batch is made of: one example for the offline family, a
    (chosen, rejected) pair for DPO, a reward-sorted ranking for PRO.

    ``units`` is an array [units, group size] of example indices; ``lengths`` gives each unit's length
    (its longest example, what its batch rows are padded to) for the length-grouped batches."""

    source: str  # file path, or "builtin:<task>"
    corpus: Corpus
    train_rows: np.ndarray  # corpus rows of the training records
    ex_record: np.ndarray  # per example: corpus row
    ex_response: np.ndarray  # per example: response index within the record
    ex_reward: np.ndarray  # per example: reward (shifted), NaN when absent
    units: np.ndarray
    val_prompts: list[str]  # rendered, for generation
    val_raw_prompts: list[str]  # tokenizer-free text, for rewards
    val_records: list[Record] = field(default_factory=list)
    reward_shift: float = 0.0
    val_unique: list[Record] = field(default_factory=list)  # one validation record per val prompt
    max_prompt_len: int = 1
    max_response_len: int = 1
    eos_id: int = 0
    limits: Lengths | None = None
    truncation: dict[str, Truncation] = field(default_factory=dict)
    margins: list[float] | None = None  # per unit, when the pairs carry a margin (``pairs`` units)
    tied_pairs: int = 0  # ranking pairs with equal rewards, dropped (``pairs`` units)

    @cached_property
    def examples(self) -> Examples:
        return Examples(self)

    @property
    def records(self) -> list[int]:
        """The training records (corpus rows)."""
        return self.train_rows.tolist()

    @cached_property
    def example_lengths(self) -> np.ndarray:
        c = self.corpus
        p = np.minimum(c.prompt_len[self.ex_record], self.max_prompt_len)
        r = np.minimum(c.response_len[c.offsets[self.ex_record] + self.ex_response] + 1, self.max_response_len)
        return p + r

    @cached_property
    def lengths(self) -> list[int]:
        """Length of each unit: its longest example (what its batch rows are padded to)."""
        return self.example_lengths[self.units].max(axis=1).tolist() if len(self.units) else []

    @property
    def group_size(self) -> int:
        return int(self.units.shape[1]) if len(self.units) else 1

    def rows(self, units: list[int]) -> list[int]:
        """Example indices of a micro-batch of units, response-major (all first responses, then all
        second ones, …), the layout the preference losses expect."""
        return [int(self.units[u][j]) for j in range(self.group_size) for u in units]

    def truncation_json(self) -> dict:
        """What run.json records about lengths and cuts."""
        lim = self.limits
        return {"policy": next(iter(self.truncation.values())).policy if self.truncation else None,
                "max_prompt_len": self.max_prompt_len, "max_response_len": self.max_response_len,
                "lengths_from": lim.origin if lim else None, "clamped": lim.clamped if lim else None,
                **{split: t.to_json() for split, t in self.truncation.items()}}

    def report(self, log) -> None:
        """One warning when the model's context forced shorter lengths, one line per split."""
        if self.limits is not None and self.limits.clamped:
            warn(self.limits.clamped)
        for t in self.truncation.values():
            t.report(log)


def builtin_records(task: str, split: str) -> list[Record]:
    from ..tasks import get_task

    rows = get_task(task).records(split)
    src = f"builtin:{task}/{split}"
    return [parse_record(src, i + 1, row) for i, row in enumerate(rows)]


def _ranked(rewards) -> list[int]:
    """Response indices by reward, best first; ties keep the input order (a stable sort)."""
    return sorted(range(len(rewards)), key=lambda j: -rewards[j])


def record_units(kind: str, rewards, which: str) -> list[list[int]]:
    """The units one record gives, as lists of response indices.

    ``best``: the response of a response record, the chosen one of a pair, the top-rewarded one of a
    ranking (first on ties). ``all``: every response, one unit each. ``pair``: (chosen, rejected) of a
    preference record, (best, worst) of a ranking (none when all its rewards are equal). ``pairs``:
    (chosen, rejected) of a preference record; every pair of a ranking's responses with different
    rewards, the better one first (pairs with equal rewards carry no preference: none). ``ranking``:
    every response, sorted by reward (best first, stable)."""
    n = len(rewards)
    if which == "all" or (which == "best" and n == 1):
        return [[j] for j in range(n)]
    if kind == "preference" and which in ("best", "pair", "pairs"):
        return [[0]] if which == "best" else [[0, 1]]
    order = _ranked(rewards)
    if which == "best":
        return [[order[0]]]
    if which == "pair":
        return [] if rewards[order[0]] == rewards[order[-1]] else [[order[0], order[-1]]]
    if which == "pairs":
        return [[a, b] for x, a in enumerate(order) for b in order[x + 1 :] if rewards[a] > rewards[b]]
    return [order]


def expand(records: list[Record], which: str = "best") -> list[list[tuple[int, int]]]:
    """Units of (record, response) pairs of a list of records (:func:`record_units`)."""
    return [[(i, j) for j in unit] for i, rec in enumerate(records) for unit in record_units(rec.kind, rec.rewards, which)]


def check_distinct_pairs(records: list[Record], units: list[list[tuple[int, int]]], source: str) -> None:
    """A pair whose two responses are the same text states no preference (and trains a reward model or DPO
    on nothing): refused, naming the record and field."""
    for (i, a), (_, b) in units:
        rec = records[i]
        if rec.responses[a] == rec.responses[b]:
            if rec.kind == "preference":
                raise data_error(source, rec.line, "rejected", "identical to 'chosen'; a preference pair needs two "
                                 "different responses")
            raise data_error(source, rec.line, f"responses[{b}]", f"identical to responses[{a}], which has a "
                             "different reward; a ranking needs different responses")


def margins_of(values: list, line_of, source: str) -> list[float] | None:
    """Each pair's margin (a preference record's ``margin``, TRL's column of that name; None for a pair
    without one), checked: either every pair has a margin or none does. ``line_of(k)``: pair k's line."""
    given = [k for k, v in enumerate(values) if v is not None]
    if not given:
        return None
    out = []
    for k, v in enumerate(values):
        if v is None:
            raise data_error(source, line_of(k), "margin", f"missing, while {unit_of(line_of(given[0]))} has one: "
                             "give every pair a margin, or none")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise data_error(source, line_of(k), "margin", f"expected a finite number, got {v!r}")
        out.append(float(v))
    return out


def pair_margins(records: list[Record], units: list[list[tuple[int, int]]], source: str) -> list[float] | None:
    """The margin of each pair of ``units`` (:func:`margins_of`)."""
    recs = [records[u[0][0]] for u in units]
    return margins_of([r.meta.get("margin") if r.kind == "preference" else None for r in recs],
                      lambda k: recs[k].line, source)


def expand_corpus(corpus: Corpus, rows: np.ndarray, which: str, algo_name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The examples (record, response) of the training records ``rows`` and the units they make
    (:func:`record_units`), in record order; returns (example records, example responses, group size).
    The common cases are whole-array operations; rankings go record by record."""
    kind = corpus.kinds[0]
    if which == "all":
        rec, resp, _ = corpus.responses_of(rows)
        return rec, resp, 1
    if which == "best" and kind != "ranking":
        return rows.copy(), np.zeros(len(rows), dtype=np.int64), 1
    if which in ("pair", "pairs") and kind == "preference":
        return np.repeat(rows, 2), np.tile(np.array([0, 1]), len(rows)), 2
    rec_out: list[int] = []
    resp_out: list[int] = []
    size = None
    for i, n in zip(rows.tolist(), corpus.counts(rows).tolist(), strict=True):
        start = int(corpus.offsets[i])
        units = record_units(kind, corpus.rewards[start : start + n], which)
        if which == "ranking":
            size = n if size is None else size
            if n != size:
                raise LolkitError(f"{corpus.source}:{corpus.line(i)}: field 'responses': {n} candidates, but the first "
                                  f"record has {size}; {algo_name} needs the same number of candidates in every record")
            if n < 2:
                raise LolkitError(f"{corpus.source}:{corpus.line(i)}: field 'responses': {algo_name} needs at least 2 "
                                  "candidates per record")
        for unit in units:
            rec_out += [i] * len(unit)
            resp_out += unit
    group = 1 if which == "best" else 2 if which in ("pair", "pairs") else (size or 1)
    return np.array(rec_out, dtype=np.int64), np.array(resp_out, dtype=np.int64), group


def _check_pairs(corpus: Corpus, ex_record: np.ndarray, ex_response: np.ndarray, which: str,
                 source: str) -> tuple[list[float] | None, int]:
    """Pairs (DPO, reward models): no pair of identical texts (the first one is refused with
    :func:`check_distinct_pairs`'s message), the margins of ``pairs`` units and the tied ranking pairs
    they leave out. Returns (margins or None, tied pairs)."""
    import pyarrow.compute as pc

    if which not in ("pair", "pairs"):
        return None, 0
    first_rec, a, b = ex_record[0::2], ex_response[0::2], ex_response[1::2]
    if corpus.kinds[0] == "preference":
        responses = corpus.records.data.column("responses")
        same = pc.equal(pc.list_element(responses, 0), pc.list_element(responses, 1)).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(same[first_rec])
    else:
        bad = [k for k in range(len(first_rec)) if corpus.response_text(int(first_rec[k]), int(a[k]))
               == corpus.response_text(int(first_rec[k]), int(b[k]))][:1]
    if len(bad):
        k = int(bad[0])
        check_distinct_pairs([corpus.record(int(first_rec[k]))], [[(0, int(a[k])), (0, int(b[k]))]], source)
    if which != "pairs":
        return None, 0
    tied = 0
    if corpus.kinds[0] == "ranking":
        rows = np.unique(first_rec) if len(first_rec) else first_rec
        for i, n in zip(rows.tolist(), corpus.counts(rows).tolist(), strict=True):
            r = corpus.rewards[int(corpus.offsets[i]) : int(corpus.offsets[i]) + n]
            tied += sum(x == y for x, y in combinations(r.tolist(), 2))
        return None, tied
    metas = corpus.records.data.column("meta").take(first_rec).to_pylist()
    values = [json.loads(m).get("margin") if m else None for m in metas]
    return margins_of(values, lambda k: corpus.line(int(first_rec[k])), source), 0


def _response_field(kind: str, j: int) -> str:
    return {"response": "response", "preference": ("chosen", "rejected")[min(j, 1)]}.get(kind, f"responses[{j}]")


def _check_rewards(corpus: Corpus, rows: np.ndarray, algo, shift_rewards: bool) -> float:
    """Rewards the algorithm needs, with the schema's own messages; returns the shift (or 0)."""
    if not (algo.needs_reward or algo.nonnegative_reward) or not len(rows):
        return 0.0
    owner, _, index = corpus.responses_of(rows)
    flat = corpus.rewards[index]
    if algo.needs_reward and np.isnan(flat).any():
        require_rewards([corpus.record(int(owner[np.argmax(np.isnan(flat))]))], corpus.source, algo.name)
    shift = 0.0
    if algo.nonnegative_reward:
        present = flat[~np.isnan(flat)]
        low = float(present.min()) if len(present) else 0.0
        if shift_rewards and low < 0:
            shift = -low
        elif not shift_rewards and low < 0:
            check_nonnegative([corpus.record(int(owner[np.argmax(flat < 0)]))], corpus.source, algo.name)
    return shift


def _val_lengths(tokenizer, records: list[Record], rendered: list[str]) -> tuple[list[int], list[list[int]]]:
    """Full token counts of the validation prompts and of each of their responses (with EOS)."""
    p = [len(ids) for ids in encode_texts(tokenizer, rendered, True)]
    ids = iter(encode_texts(tokenizer, [r for rec in records for r in rec.responses], False))
    return p, [[len(next(ids)) + 1 for _ in rec.responses] for rec in records]


def load_train_data(data_cfg, tokenizer, algo, *, which: str = "best", window: int | None = None,
                    model: str = "the model") -> TrainData:
    """Read, validate and encode the training data, pick the validation prompts, resolve the lengths
    (``window``: the model's context) and apply ``data.truncation``."""
    policy = check_policy(data_cfg.truncation)
    if data_cfg.train is None:
        source = f"builtin:{data_cfg.task}"
        corpus = load_corpus(source, tokenizer, records=builtin_records(data_cfg.task, "train"),
                             num_proc=data_cfg.num_proc)
        val_records = builtin_records(data_cfg.task, "val")
        rows = np.arange(len(corpus))
    else:
        source = data_cfg.train
        corpus = load_corpus(source, tokenizer, num_proc=data_cfg.num_proc)
        if data_cfg.val:
            val_records = load_prompts(data_cfg.val)  # records, or lines holding only a prompt
            rows = np.arange(len(corpus))
        else:
            held = corpus.prompt_hash < data_cfg.val_fraction
            val_records = [corpus.record(int(i)) for i in np.flatnonzero(held)]
            rows = np.flatnonzero(~held)
            if len(corpus) and not len(rows):
                raise LolkitError(f"{source}: no training records left after holding out validation prompts")
    if not len(rows):
        raise LolkitError(f"{source}: no records")
    kind = corpus.kinds[0]
    if kind not in algo.records:
        raise LolkitError(f"{source}: holds {kind} records, but --algo {algo.name} trains on "
                          f"{' or '.join(algo.records)} records")
    shift = _check_rewards(corpus, rows, algo, data_cfg.shift_rewards)
    ex_record, ex_response, group = expand_corpus(corpus, rows, which, algo.name)
    if not len(ex_record):
        raise LolkitError(f"{source}: no training units (every ranking had equal rewards)")
    margins, tied = _check_pairs(corpus, ex_record, ex_response, which, source)

    # lengths: the longest prompt and response of both splits, unless set; capped by the context
    val_rendered = [render_prompt(tokenizer, r.prompt) for r in val_records]
    val_p, val_r = _val_lengths(tokenizer, val_records, val_rendered)
    ex_p = corpus.prompt_len[ex_record]
    ex_r = corpus.response_len[corpus.offsets[ex_record] + ex_response] + 1  # with EOS
    longest_p = max(int(ex_p.max()), max(val_p, default=0))
    longest_r = max(int(ex_r.max()), max((x for rs in val_r for x in rs), default=0))
    lim = pair_lengths(data_cfg.max_prompt_len, data_cfg.max_response_len, longest_p, longest_r, window, model)
    mpl, mrl = lim.max_prompt_len, lim.max_response_len

    # train split: prompts counted once per record, responses once per example
    p_cut, r_cut = ex_p > mpl, ex_r > mrl
    train = Truncation("train", policy, mpl, mrl, prompts=len(np.unique(ex_record)),
                       prompts_cut=len(np.unique(ex_record[p_cut])), responses=len(ex_record),
                       responses_cut=int(r_cut.sum()))
    cut = p_cut | r_cut
    if policy == "error" and cut.any():
        k = int(np.argmax(cut))
        line = corpus.line(int(ex_record[k]))
        if p_cut[k]:
            raise cut_error(source, line, "prompt", int(ex_p[k]), f"data.max_prompt_len = {mpl}")
        raise cut_error(source, line, _response_field(kind, int(ex_response[k])), int(ex_r[k]),
                        f"data.max_response_len = {mrl}", eos=True)
    units = np.arange(len(ex_record), dtype=np.int64).reshape(-1, group)
    if policy == "drop" and cut.any():
        keep = ~cut[units].any(axis=1)
        train.dropped = int((~keep).sum())
        kept = units[keep].ravel()
        ex_record, ex_response = ex_record[kept], ex_response[kept]
        margins = None if margins is None else [m for m, k in zip(margins, keep, strict=True) if k]
        units = np.arange(len(kept), dtype=np.int64).reshape(-1, group)
        if not len(units):
            raise LolkitError(f"{source}: every training example is longer than data.max_prompt_len = {mpl} / "
                              f"data.max_response_len = {mrl}, and data.truncation=drop left none")

    # validation split: its prompts (generation) and responses (validation NLL, pairs)
    val = Truncation("val", policy, mpl, mrl, prompts=len(val_records), responses=sum(len(rs) for rs in val_r))
    kept_val = []
    for rec, text, p, rs in zip(val_records, val_rendered, val_p, val_r, strict=True):
        pc_, over = p > mpl, [j for j, r in enumerate(rs) if r > mrl]
        val.prompts_cut += pc_
        val.responses_cut += len(over)
        if policy == "error" and (pc_ or over):
            vsrc = data_cfg.val or (source if data_cfg.train else f"builtin:{data_cfg.task}/val")
            if pc_:
                raise cut_error(vsrc, rec.line, "prompt", p, f"data.max_prompt_len = {mpl}")
            raise cut_error(vsrc, rec.line, _response_field(rec.kind, over[0]), rs[over[0]],
                            f"data.max_response_len = {mrl}", eos=True)
        if policy == "drop" and (pc_ or over):
            val.dropped += 1
            continue
        kept_val.append((rec, text))
    val_records = [rec for rec, _ in kept_val]
    val_unique = unique_prompts(val_records)
    rendered = {id(rec): text for rec, text in kept_val}
    rewards = corpus.rewards[corpus.offsets[ex_record] + ex_response] + shift
    return TrainData(source, corpus, rows, ex_record, ex_response, rewards, units,
                     [rendered[id(r)] for r in val_unique], [prompt_text(r.prompt) for r in val_unique],
                     val_records, shift, val_unique, mpl, mrl, tokenizer.eos_token_id, lim,
                     {"train": train, "val": val}, margins, tied)
