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
from .loader import Row, open_source, unit_of

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
            if self.prompt == "":  # a language-modelling text record (no prompt) stays one
                out = {"id": self.id, "text": self.responses[0]}
            else:
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


# The fields each kind reads; every other field of a record is kept in its ``meta``.
_FIELDS: dict[str, frozenset[str]] = {
    "response": frozenset({"id", "meta", "prompt", "response", "reward", "rewards"}),
    "preference": frozenset({"id", "meta", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}),
    "ranking": frozenset({"id", "meta", "prompt", "responses", "rewards"}),
    "text": frozenset({"id", "meta", "text", "reward", "rewards"}),
}
_ASSISTANT = "\n\nAssistant:"  # the turn marker of Anthropic-style transcripts (HH-RLHF)

KTO_HINT = ("convert it with `lolkit preprocess jsonl FILE --output OUT --label-reward` (label true → reward 1, "
            "false → reward 0) and train a reward-weighted algorithm (wbc, r_lol, a_lol, ...)")


def _refuse_other_trl_types(path: str, line: int, obj: dict, label_reward: bool) -> dict:
    """TRL's stepwise-supervision records are refused; unpaired-preference (KTO) records too, unless
    ``label_reward`` asks for their label as a reward. Without this a KTO file would read as response
    records and train on the completions labelled undesirable as well."""
    if "completions" in obj and "labels" in obj:
        raise data_error(path, line, "completions", "a TRL stepwise-supervision record (completions + labels): "
                         "lolkit trains no process reward model; score whole responses instead")
    label = obj.get("label")
    if isinstance(label, bool) and ("completion" in obj or "response" in obj):
        if not label_reward:
            raise data_error(path, line, "label", "a TRL unpaired-preference (KTO) record: lolkit has no KTO loss, "
                             f"and as a response record it would train on undesirable completions; {KTO_HINT}")
        if obj.get("reward") is not None:
            raise data_error(path, line, "label", "has both 'label' and 'reward'; --label-reward would replace "
                             "the reward")
        obj = {k: v for k, v in obj.items() if k != "label"}
        obj["reward"] = 1.0 if label else 0.0
    return obj


def _meta(path: str, line: int, obj: dict, used: frozenset[str]) -> dict[str, Any]:
    """``meta`` plus every field the record's kind does not read, so no field is dropped unseen. A field
    whose name ``meta`` already holds with another value goes to ``meta["fields"]``."""
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise data_error(path, line, "meta", f"expected an object, got {_tname(meta)}")
    extra = {k: v for k, v in obj.items() if k not in used}
    if not extra:
        return meta
    meta = dict(meta)
    for k, v in extra.items():
        if k not in meta:
            meta[k] = v
        elif meta[k] != v:
            meta.setdefault("fields", {})[k] = v
    return meta


def _word_cut(a: str, b: str, n: int) -> int:
    """Where the shared prefix ``a[:n]`` of two texts becomes their prompt: after the last Anthropic
    ``Assistant:`` turn marker in it when there is one (so the completions are whole replies), else at
    ``n`` when that is a word boundary, else at the last whitespace before ``n`` (TRL cuts at the first
    differing character, mid-word). A space just before the cut goes to the completions, as in TRL."""
    marker = a.rfind(_ASSISTANT, 0, n)
    if marker >= 0:
        return marker + len(_ASSISTANT)

    def in_word(s: str, i: int) -> bool:
        return i < len(s) and (s[i].isalnum() or s[i] == "_")

    cut = n
    if n and in_word(a, n - 1) and (in_word(a, n) or in_word(b, n)):
        cut = max(a.rfind(c, 0, n) for c in (" ", "\n", "\t"))
        cut = max(cut, 0)
    while cut > 0 and a[cut - 1] == " ":
        cut -= 1
    return cut


def implicit_prompt(path: str, line: int, chosen: Any, rejected: Any) -> tuple[Prompt, Any, Any]:
    """TRL's implicit-prompt preference: ``chosen`` and ``rejected`` are whole conversations (message lists)
    or transcripts (strings) that share the prompt. Returns (prompt, chosen rest, rejected rest)."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        a = _messages(path, line, "chosen", chosen)
        b = _messages(path, line, "rejected", rejected)
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        while n and a[n - 1]["role"] == "assistant":  # the completions start with the assistant's reply
            n -= 1
        if n == 0:
            raise data_error(path, line, "chosen", "chosen and rejected share no prompt messages (give 'prompt')")
        return a[:n], a[n:], b[n:]
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        cut = _word_cut(chosen, rejected, n)
        if not chosen[:cut].strip():
            raise data_error(path, line, "chosen", "chosen and rejected share no prompt text (give 'prompt')")
        return chosen[:cut], chosen[cut:], rejected[cut:]
    raise data_error(path, line, "rejected", "chosen and rejected must both be strings or both message lists")


def parse_record(path: str, line: int, obj: dict, kind: Kind | None = None, label_reward: bool = False,
                 id_prefix: str = "") -> Record:
    """Validate one JSON object and normalise it into a :class:`Record` (a record without an id gets
    ``id_prefix`` + ``line-N`` / ``row-N``)."""
    obj = _refuse_other_trl_types(path, line, obj, label_reward)
    found = detect_kind(obj)
    if found is None:
        if "text" in obj:
            return _text_record(path, line, obj, kind, id_prefix)
        if "prompt" in obj:
            raise data_error(path, line, None, "a prompt-only record (no response): `lolkit generate`, `eval` and the "
                             "online algorithms read those; this command needs records with responses")
        raise data_error(path, line, None, "not a lolkit record: expected 'response' (or 'completion' / "
                         "'messages' / 'text'), 'chosen'/'rejected', or 'responses'")
    if kind is not None and found != kind:
        raise data_error(path, line, None, f"a {found} record in a file of {kind} records")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise data_error(path, line, "id", f"expected a string or integer, got {_tname(rid)}")
    rec_id = str(rid) if rid is not None else default_id(line, id_prefix)

    if found == "response":
        if "messages" in obj and "prompt" not in obj:
            msgs = _messages(path, line, "messages", obj["messages"])
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise data_error(path, line, "messages", "the last message must be the assistant's, after at least one other")
            prompt: Prompt = msgs[:-1]
            response = _response(path, line, "messages[-1].content", msgs[-1]["content"])
            used = _FIELDS["response"] | {"messages"}
        else:
            if "prompt" not in obj:
                raise data_error(path, line, "prompt", "missing field")
            prompt = _prompt(path, line, obj["prompt"])
            name = "response" if "response" in obj else "completion"
            response = _response(path, line, name, obj[name])
            used = _FIELDS["response"] | {name}
        reward = _reward(path, line, "reward", obj.get("reward"))
        comps = _components(path, line, "rewards", obj.get("rewards"))
        return Record("response", prompt, [response], [reward], [comps], rec_id, _meta(path, line, obj, used), line)

    if found == "preference":
        for f in ("chosen", "rejected"):
            if f not in obj:
                raise data_error(path, line, f, "missing field")
        chosen_in, rejected_in = obj["chosen"], obj["rejected"]
        used = _FIELDS["preference"]
        conversational = isinstance(chosen_in, list) and isinstance(rejected_in, list)
        if "prompt" not in obj or (isinstance(obj["prompt"], str) and conversational):
            # TRL's implicit prompt; a string prompt beside whole conversations is TRL's cue to take the
            # prompt from the conversations too (ultrafeedback_binarized), and is kept in meta
            prompt, chosen_in, rejected_in = implicit_prompt(path, line, chosen_in, rejected_in)
            used = used - {"prompt"}
        else:
            prompt = _prompt(path, line, obj["prompt"])
        chosen = _response(path, line, "chosen", chosen_in)
        rejected = _response(path, line, "rejected", rejected_in)
        rewards = [_reward(path, line, "chosen_reward", obj.get("chosen_reward")),
                   _reward(path, line, "rejected_reward", obj.get("rejected_reward"))]
        return Record("preference", prompt, [chosen, rejected], rewards, [{}, {}], rec_id,
                      _meta(path, line, obj, used), line)

    if "prompt" not in obj:
        raise data_error(path, line, "prompt", "missing field")
    prompt = _prompt(path, line, obj["prompt"])
    responses = obj["responses"]
    if not isinstance(responses, list) or not responses:
        raise data_error(path, line, "responses", "expected a non-empty list of strings")
    if len(responses) < 2:
        raise data_error(path, line, "responses", "a ranking needs at least 2 responses, got 1 (write it as a "
                         "response record: 'response' and 'reward')")
    texts = [_response(path, line, f"responses[{i}]", r) for i, r in enumerate(responses)]
    rewards_in = obj.get("rewards")
    if not isinstance(rewards_in, list):
        raise data_error(path, line, "rewards", f"expected a list of numbers, got {_tname(rewards_in)}")
    if len(rewards_in) != len(texts):
        raise data_error(path, line, "rewards", f"has {len(rewards_in)} values for {len(texts)} responses")
    rewards = [_reward(path, line, f"rewards[{i}]", r, required=True) for i, r in enumerate(rewards_in)]
    return Record("ranking", prompt, texts, rewards, [{} for _ in texts], rec_id,
                  _meta(path, line, obj, _FIELDS["ranking"]), line)


def default_id(line: int, prefix: str = "") -> str:
    """The id of a record that has none: ``line-N`` in JSON lines, ``row-N`` in every other format (after
    the file's name when a split spans several files)."""
    return f"{prefix}{'row' if isinstance(line, Row) else 'line'}-{int(line)}"


def _rows(path: str | Path) -> Iterator[tuple[str, int, dict, str]]:
    """The loader's rows, with the prefix that keeps default ids unique in a split of several files."""
    src = open_source(path)
    for label, line, obj in src.rows():
        yield label, line, obj, "" if label == src.label else f"{Path(label).name}:"


def _text_record(path: str, line: int, obj: dict, kind: Kind | None, id_prefix: str) -> Record:
    """TRL's language-modelling record ``{"text": ...}``: the whole text is the response, after an empty
    prompt (the model learns every token of it, as TRL's SFT does)."""
    if kind is not None and kind != "response":
        raise data_error(path, line, None, f"a text record in a file of {kind} records")
    text = obj["text"]
    if not isinstance(text, str):
        raise data_error(path, line, "text", f"expected a string, got {_tname(text)}")
    if not text.strip():
        raise data_error(path, line, "text", "empty string")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise data_error(path, line, "id", f"expected a string or integer, got {_tname(rid)}")
    reward = _reward(path, line, "reward", obj.get("reward"))
    comps = _components(path, line, "rewards", obj.get("rewards"))
    meta = _meta(path, line, obj, _FIELDS["text"])
    return Record("response", "", [text], [reward], [comps], str(rid) if rid is not None else default_id(line, id_prefix),
                  meta, line)


def iter_records(path: str | Path, kind: Kind | None = None, label_reward: bool = False
                 ) -> Iterator[tuple[dict, Record]]:
    """``(raw object, validated record)`` per row of any format :mod:`lolkit.data.loader` reads; all
    records of one kind, ids unique."""
    seen: dict[str, int] = {}
    for label, line, obj, prefix in _rows(path):
        rec = parse_record(label, line, obj, kind, label_reward, prefix)
        kind = rec.kind
        if rec.id in seen:
            raise data_error(label, line, "id", f"duplicate id {rec.id!r} (first on {unit_of(seen[rec.id])})")
        seen[rec.id] = line
        yield obj, rec


def load_records(path: str | Path, kind: Kind | None = None, label_reward: bool = False) -> list[Record]:
    """Read and validate a whole file (any format the loader reads). All records must be of one kind;
    ids must be unique."""
    return [rec for _, rec in iter_records(path, kind, label_reward)]


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
    """Prompts to generate for: records of the contract, or rows holding only a ``prompt`` (TRL's
    prompt-only type) — one kind per file, ids unique, as for :func:`load_records`."""
    out: list[Record] = []
    seen: dict[str, int] = {}
    kind: str | None = None
    for label, line, obj, prefix in _rows(path):
        if detect_kind(obj) is not None:
            rec = parse_record(label, line, obj, label_reward=True, id_prefix=prefix)  # only the prompt is read: a KTO label is harmless
            this = rec.kind
        elif "prompt" not in obj:
            hint = " (a language-modelling 'text' record has no prompt to answer)" if "text" in obj else ""
            raise data_error(label, line, "prompt", "missing field" + hint)
        else:
            rid = obj.get("id")
            if rid is not None and not isinstance(rid, (str, int)):
                raise data_error(label, line, "id", f"expected a string or integer, got {_tname(rid)}")
            prompt = _prompt(label, line, obj["prompt"])
            rec = Record("response", prompt, [], [], [], str(rid) if rid is not None else default_id(line, prefix),
                         _meta(label, line, obj, frozenset({"id", "meta", "prompt"})), line)
            this = "prompt-only"
        if kind is not None and this != kind:
            raise data_error(label, line, None, f"a {this} record in a file of {kind} records")
        kind = this
        if rec.id in seen:
            raise data_error(label, line, "id", f"duplicate id {rec.id!r} (first on {unit_of(seen[rec.id])})")
        seen[rec.id] = line
        out.append(rec)
    return out
