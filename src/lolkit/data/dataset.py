"""From a records file (or a built-in task) to encoded training examples and validation prompts."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from itertools import combinations

from ..errors import LolkitError, data_error
from .schema import (
    Record,
    check_nonnegative,
    load_prompts,
    load_records,
    parse_record,
    require_rewards,
    unique_prompts,
)
from .tokenize import Encoded, encode_pair, prompt_text, render_prompt


@dataclass
class Example:
    """One (prompt, response) pair to train on."""

    record: int  # index of its record
    response: int  # index of the response within the record
    prompt: str  # rendered prompt text (chat template applied)
    text: str  # response text
    reward: float | None
    encoded: Encoded


@dataclass
class TrainData:
    """Encoded examples, and the units a batch is made of: one example for the offline family, a
    (chosen, rejected) pair for DPO, a reward-sorted ranking for PRO."""

    source: str  # file path, or "builtin:<task>"
    records: list[Record]
    examples: list[Example]
    val_prompts: list[str]  # rendered, for generation
    val_raw_prompts: list[str]  # tokenizer-free text, for rewards
    val_records: list[Record] = field(default_factory=list)
    reward_shift: float = 0.0
    units: list[tuple[int, ...]] = field(default_factory=list)
    val_unique: list[Record] = field(default_factory=list)  # one validation record per val prompt
    margins: list[float] | None = None  # per unit, when the pairs carry a margin (``pairs`` units)
    tied_pairs: int = 0  # ranking pairs with equal rewards, dropped (``pairs`` units)

    @property
    def lengths(self) -> list[int]:
        """Length of each unit: its longest example (what its batch rows are padded to)."""
        return [max(len(self.examples[i].encoded) for i in u) for u in self.units]

    @property
    def group_size(self) -> int:
        return len(self.units[0]) if self.units else 1

    def rows(self, units: list[int]) -> list[int]:
        """Example indices of a micro-batch of units, response-major (all first responses, then all
        second ones, …), the layout the preference losses expect."""
        return [self.units[u][j] for j in range(self.group_size) for u in units]


def builtin_records(task: str, split: str) -> list[Record]:
    from ..tasks import get_task

    rows = get_task(task).records(split)
    src = f"builtin:{task}/{split}"
    return [parse_record(src, i + 1, row) for i, row in enumerate(rows)]


def _is_val(prompt: str, fraction: float) -> bool:
    h = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def _ranked(rec: Record) -> list[int]:
    """Response indices by reward, best first; ties keep the input order (a stable sort)."""
    return sorted(range(len(rec.responses)), key=lambda j: -rec.rewards[j])  # type: ignore[operator]


def expand(records: list[Record], which: str = "best") -> list[list[tuple[int, int]]]:
    """Units of (record, response) pairs to train on.

    ``best``: one per record — the response of a response record, the chosen one of a pair, the
    top-rewarded one of a ranking (first on ties). ``all``: every response, one unit each.
    ``pair``: (chosen, rejected) of a preference record, (best, worst) of a ranking.
    ``pairs``: (chosen, rejected) of a preference record; every pair of a ranking's responses with
    different rewards, the better one first (pairs with equal rewards carry no preference: dropped).
    ``ranking``: every response of a record, sorted by reward (best first, stable)."""
    units: list[list[tuple[int, int]]] = []
    for i, rec in enumerate(records):
        if which == "all" or (which == "best" and len(rec.responses) == 1):
            units += [[(i, j)] for j in range(len(rec.responses))]
        elif which == "best":
            units.append([(i, 0 if rec.kind == "preference" else _ranked(rec)[0])])
        elif which == "pair":
            if rec.kind == "preference":
                units.append([(i, 0), (i, 1)])
            else:
                order = _ranked(rec)
                if rec.rewards[order[0]] == rec.rewards[order[-1]]:
                    continue  # no preference among equal rewards
                units.append([(i, order[0]), (i, order[-1])])
        elif which == "pairs":
            if rec.kind == "preference":
                units.append([(i, 0), (i, 1)])
            else:
                order = _ranked(rec)
                units += [[(i, a), (i, b)] for x, a in enumerate(order) for b in order[x + 1 :]
                          if rec.rewards[a] > rec.rewards[b]]  # type: ignore[operator]
        else:  # ranking
            units.append([(i, j) for j in _ranked(rec)])
    return units


def tied_pairs(records: list[Record]) -> int:
    """Pairs of a ranking's responses with equal rewards (the ``pairs`` units leave them out)."""
    return sum(a == b for rec in records if rec.kind == "ranking" for a, b in combinations(rec.rewards, 2))


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


def pair_margins(records: list[Record], units: list[list[tuple[int, int]]], source: str) -> list[float] | None:
    """Each pair's margin (a preference record's ``margin``, TRL's column of that name), or None when no
    pair has one. Either every pair has a margin or none does."""
    values = [records[u[0][0]].meta.get("margin") if records[u[0][0]].kind == "preference" else None for u in units]
    given = [k for k, v in enumerate(values) if v is not None]
    if not given:
        return None
    out = []
    for unit, v in zip(units, values, strict=True):
        rec = records[unit[0][0]]
        if v is None:
            raise data_error(source, rec.line, "margin", f"missing, while line {records[units[given[0]][0][0]].line} "
                             "has one: give every pair a margin, or none")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise data_error(source, rec.line, "margin", f"expected a finite number, got {v!r}")
        out.append(float(v))
    return out


def load_train_data(data_cfg, tokenizer, algo, *, which: str = "best") -> TrainData:
    """Read, validate and encode the training data and pick the validation prompts."""
    if data_cfg.train is None:
        source = f"builtin:{data_cfg.task}"
        records = builtin_records(data_cfg.task, "train")
        val_records = builtin_records(data_cfg.task, "val")
    else:
        source = data_cfg.train
        records = load_records(source)
        if data_cfg.val:
            val_records = load_prompts(data_cfg.val)  # records, or lines holding only a prompt
        else:
            val_records = [r for r in records if _is_val(prompt_text(r.prompt), data_cfg.val_fraction)]
            held = {id(r) for r in val_records}
            records = [r for r in records if id(r) not in held]
            if not records:
                raise LolkitError(f"{source}: no training records left after holding out validation prompts")
    if not records:
        raise LolkitError(f"{source}: no records")
    if records[0].kind not in algo.records:
        raise LolkitError(f"{source}: holds {records[0].kind} records, but --algo {algo.name} trains on "
                          f"{' or '.join(algo.records)} records")
    shift = 0.0
    if algo.needs_reward:
        require_rewards(records, source, algo.name)
    if algo.nonnegative_reward:
        low = min(r for rec in records for r in rec.rewards if r is not None)
        if data_cfg.shift_rewards and low < 0:
            shift = -low
        elif not data_cfg.shift_rewards:
            check_nonnegative(records, source, algo.name)
    examples = []
    units: list[tuple[int, ...]] = []
    rendered: dict[int, str] = {}
    expanded = expand(records, which)
    margins = None
    if which in ("pair", "pairs"):
        check_distinct_pairs(records, expanded, source)
    if which == "pairs":
        margins = pair_margins(records, expanded, source)
    for unit in expanded:
        if which == "ranking" and len(unit) != len(expanded[0]):
            raise LolkitError(f"{source}:{records[unit[0][0]].line}: field 'responses': {len(unit)} candidates, but "
                              f"the first record has {len(expanded[0])}; {algo.name} needs the "
                              "same number of candidates in every record")
        if which == "ranking" and len(unit) < 2:
            raise LolkitError(f"{source}:{records[unit[0][0]].line}: field 'responses': {algo.name} needs at least "
                              "2 candidates per record")
        ids = []
        for i, j in unit:
            rec = records[i]
            if i not in rendered:
                rendered[i] = render_prompt(tokenizer, rec.prompt)
            enc = encode_pair(tokenizer, rendered[i], rec.responses[j], data_cfg.max_prompt_len, data_cfg.max_response_len)
            reward = None if rec.rewards[j] is None else rec.rewards[j] + shift
            ids.append(len(examples))
            examples.append(Example(i, j, rendered[i], rec.responses[j], reward, enc))
        units.append(tuple(ids))
    if not units:
        raise LolkitError(f"{source}: no training units (every ranking had equal rewards)")
    val_unique = unique_prompts(val_records)
    val_prompts = [render_prompt(tokenizer, rec.prompt) for rec in val_unique]
    val_raw = [prompt_text(rec.prompt) for rec in val_unique]
    return TrainData(source, records, examples, val_prompts, val_raw, val_records, shift, units, val_unique, margins,
                     tied_pairs(records) if which == "pairs" else 0)
