"""The data contract: three record kinds, validated at the boundary.

* response record   ``prompt``, ``response`` [, ``reward``, ``rewards``, ``id``, ``meta``]
* preference record ``prompt``, ``chosen``, ``rejected`` [, ``chosen_reward``, ``rejected_reward``, ``id``, ``meta``]
* ranking record    ``prompt``, ``responses`` (list), ``rewards`` (list, same length) [, ``id``, ``meta``]

Also accepted and normalised on read: TRL's standard formats (``prompt``/``completion``, ``prompt``/
``chosen``/``rejected``) and conversational ones, where ``prompt`` is a list of ``{"role", "content"}``
messages and a response/completion/chosen/rejected is either a string or a list holding the
assistant message(s). A ``messages`` record (a whole conversation whose last message is the
assistant's) becomes a response record. Conversational prompts stay message lists until a tokenizer
renders them with its chat template (:func:`lolkit.data.tokenize.render_prompt`).

Everything here raises :class:`~lolkit.errors.LolkitError` naming file, line and field; code past
this module trusts its input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import LolkitError, data_error
from ..io import iter_jsonl

Kind = Literal["response", "preference", "ranking"]
Prompt = str | list[dict[str, str]]

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Record:
    """One validated record. ``responses``/``rewards`` hold one entry per candidate response:
    one for a response record, two (chosen, rejected) for a preference record, n for a ranking."""

    kind: Kind
    prompt: Prompt
    responses: list[str]
    rewards: list[float | None]
    components: list[dict[str, float]] = field(default_factory=list)
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def to_json(self) -> dict[str, Any]:
        """The record in the contract's own field names."""
        out: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        if self.kind == "response":
            out["response"] = self.responses[0]
            if self.rewards[0] is not None:
                out["reward"] = self.rewards[0]
            if self.components and self.components[0]:
                out["rewards"] = self.components[0]
        elif self.kind == "preference":
            out["chosen"], out["rejected"] = self.responses
            if self.rewards[0] is not None:
                out["chosen_reward"] = self.rewards[0]
            if self.rewards[1] is not None:
                out["rejected_reward"] = self.rewards[1]
        else:
            out["responses"] = list(self.responses)
            out["rewards"] = list(self.rewards)
        if self.meta:
            out["meta"] = self.meta
        return out


def prompt_text(prompt: Prompt) -> str:
    """A tokenizer-free text of a prompt, for rewards and logs."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def unique_prompts(records: Iterable[Record]) -> list[Record]:
    """The first record of every distinct prompt (by :func:`prompt_text`), in order: a split of
    response records holds each prompt once per response or annotator."""
    out: dict[str, Record] = {}
    for rec in records:
        out.setdefault(prompt_text(rec.prompt), rec)
    return list(out.values())


def _messages(path: str, line: int, name: str, value: Any) -> list[dict[str, str]]:
    if not value:
        raise data_error(path, line, name, "empty message list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "content" not in m or "role" not in m:
            raise data_error(path, line, f"{name}[{i}]", "a message needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise data_error(path, line, f"{name}[{i}].role", f"unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise data_error(path, line, f"{name}[{i}].content", f"expected a string, got {type(m['content']).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _prompt(path: str, line: int, value: Any, name: str = "prompt") -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise data_error(path, line, name, "empty string")
        return value
    if isinstance(value, list):
        return _messages(path, line, name, value)
    raise data_error(path, line, name, f"expected a string or a list of messages, got {_tname(value)}")


def _response(path: str, line: int, name: str, value: Any) -> str:
    """A response is text; a conversational completion is the assistant message(s) it holds."""
    if isinstance(value, list):
        msgs = _messages(path, line, name, value)
        if any(m["role"] != "assistant" for m in msgs):
            raise data_error(path, line, name, "a completion may only hold assistant messages")
        value = "".join(m["content"] for m in msgs)
    elif not isinstance(value, str):
        raise data_error(path, line, name, f"expected a string, got {_tname(value)}")
    if not value.strip():
        raise data_error(path, line, name, "empty string")
    return value


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _reward(path: str, line: int, name: str, value: Any, required: bool = False) -> float | None:
    if value is None:
        if required:
            raise data_error(path, line, name, "missing reward")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise data_error(path, line, name, f"expected a number, got {_tname(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise data_error(path, line, name, f"reward must be finite, got {value}")
    return v


def _components(path: str, line: int, name: str, value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise data_error(path, line, name, f"expected an object of component name -> number, got {_tname(value)}")
    return {str(k): _reward(path, line, f"{name}.{k}", v, required=True) for k, v in value.items()}  # type: ignore[misc]


def detect_kind(obj: dict) -> Kind | None:
    if "responses" in obj:
        return "ranking"
    if "chosen" in obj or "rejected" in obj:
        return "preference"
    if "response" in obj or "completion" in obj or "messages" in obj:
        return "response"
    return None


def parse_record(path: str, line: int, obj: dict, kind: Kind | None = None) -> Record:
    """Validate one JSON object and normalise it into a :class:`Record`."""
    found = detect_kind(obj)
    if found is None:
        raise data_error(path, line, None, "not a lolkit record: expected 'response' (or 'completion' / "
                         "'messages'), 'chosen'/'rejected', or 'responses'")
    if kind is not None and found != kind:
        raise data_error(path, line, None, f"a {found} record in a file of {kind} records")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise data_error(path, line, "id", f"expected a string or integer, got {_tname(rid)}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise data_error(path, line, "meta", f"expected an object, got {_tname(meta)}")
    rec_id = str(rid) if rid is not None else f"line-{line}"

    if found == "response":
        if "messages" in obj and "prompt" not in obj:
            msgs = _messages(path, line, "messages", obj["messages"])
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise data_error(path, line, "messages", "the last message must be the assistant's, after at least one other")
            prompt: Prompt = msgs[:-1]
            response = _response(path, line, "messages[-1].content", msgs[-1]["content"])
        else:
            if "prompt" not in obj:
                raise data_error(path, line, "prompt", "missing field")
            prompt = _prompt(path, line, obj["prompt"])
            name = "response" if "response" in obj else "completion"
            response = _response(path, line, name, obj[name])
        reward = _reward(path, line, "reward", obj.get("reward"))
        comps = _components(path, line, "rewards", obj.get("rewards"))
        return Record("response", prompt, [response], [reward], [comps], rec_id, meta, line)

    if "prompt" not in obj:
        raise data_error(path, line, "prompt", "missing field")
    prompt = _prompt(path, line, obj["prompt"])
    if found == "preference":
        for f in ("chosen", "rejected"):
            if f not in obj:
                raise data_error(path, line, f, "missing field")
        chosen = _response(path, line, "chosen", obj["chosen"])
        rejected = _response(path, line, "rejected", obj["rejected"])
        rewards = [_reward(path, line, "chosen_reward", obj.get("chosen_reward")),
                   _reward(path, line, "rejected_reward", obj.get("rejected_reward"))]
        if "margin" in obj:  # TRL's per-pair margin column (reward-model training), checked where it is used
            meta = {**meta, "margin": obj["margin"]}
        return Record("preference", prompt, [chosen, rejected], rewards, [{}, {}], rec_id, meta, line)

    responses = obj["responses"]
    if not isinstance(responses, list) or not responses:
        raise data_error(path, line, "responses", "expected a non-empty list of strings")
    texts = [_response(path, line, f"responses[{i}]", r) for i, r in enumerate(responses)]
    rewards_in = obj.get("rewards")
    if not isinstance(rewards_in, list):
        raise data_error(path, line, "rewards", f"expected a list of numbers, got {_tname(rewards_in)}")
    if len(rewards_in) != len(texts):
        raise data_error(path, line, "rewards", f"has {len(rewards_in)} values for {len(texts)} responses")
    rewards = [_reward(path, line, f"rewards[{i}]", r, required=True) for i, r in enumerate(rewards_in)]
    return Record("ranking", prompt, texts, rewards, [{} for _ in texts], rec_id, meta, line)


def iter_records(path: str | Path, kind: Kind | None = None) -> Iterator[tuple[dict, Record]]:
    """``(raw object, validated record)`` per line; all records of one kind, ids unique."""
    p = str(path)
    seen: dict[str, int] = {}
    for line, obj in iter_jsonl(p):
        rec = parse_record(p, line, obj, kind)
        kind = rec.kind
        if rec.id in seen:
            raise data_error(p, line, "id", f"duplicate id {rec.id!r} (first on line {seen[rec.id]})")
        seen[rec.id] = line
        yield obj, rec


def load_records(path: str | Path, kind: Kind | None = None) -> list[Record]:
    """Read and validate a whole JSONL file. All records must be of one kind; ids must be unique."""
    return [rec for _, rec in iter_records(path, kind)]


def require_rewards(records: list[Record], path: str, what: str) -> None:
    """Fail on the first response without a reward, for algorithms that need one."""
    for rec in records:
        for i, r in enumerate(rec.rewards):
            if r is None:
                fld = {"response": "reward", "preference": ("chosen_reward", "rejected_reward")[min(i, 1)],
                       "ranking": f"rewards[{i}]"}[rec.kind]
                raise data_error(path, rec.line, fld, f"missing reward ({what} needs a reward for every response; "
                                 "score the file with `lolkit reward` first)")


def check_nonnegative(records: list[Record], path: str, what: str) -> None:
    for rec in records:
        for i, r in enumerate(rec.rewards):
            if r is not None and r < 0:
                fld = "reward" if rec.kind == "response" else f"rewards[{i}]"
                raise data_error(path, rec.line, fld, f"negative reward {r} ({what} multiplies the loss by R and needs "
                                 "R >= 0; pass --shift-rewards to shift all rewards by their minimum)")


def as_kind_error(path: str, records: list[Record], kinds: tuple[Kind, ...], algo: str) -> None:
    if records and records[0].kind not in kinds:
        raise LolkitError(f"{path}: holds {records[0].kind} records, but --algo {algo} trains on "
                          f"{' or '.join(kinds)} records")


def load_prompts(path: str | Path) -> list[Record]:
    """Prompts to generate for: any record of the contract, or lines holding only a ``prompt``."""
    p = str(path)
    out: list[Record] = []
    for line, obj in iter_jsonl(p):
        if detect_kind(obj) is not None:
            out.append(parse_record(p, line, obj))
            continue
        if "prompt" not in obj:
            raise data_error(p, line, "prompt", "missing field")
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise data_error(p, line, "meta", f"expected an object, got {_tname(meta)}")
        rid = obj.get("id")
        out.append(Record("response", _prompt(p, line, obj["prompt"]), [], [], [], str(rid) if rid is not None
                          else f"line-{line}", meta, line))
    return out
