"""What every reward component shares: the batch it scores, option checking, the registry.

A component is a small class with a ``score(batch)`` over whole lists. It declares its options with
their defaults in ``OPTIONS``; anything else in its config section is an error naming the file, the
component and the key. Heavy models load lazily on the first ``score`` and are reused.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import LolkitError

COMMON = {"type": None, "weight": 1.0, "description": None}


@dataclass
class Batch:
    """Aligned lists, one entry per response to score.

    ``prompts`` are plain text (conversations flattened to ``role: content`` lines); ``messages`` keep
    the original prompt (a string or a list of chat messages) for components that render turns;
    ``references`` hold zero or more reference texts per response; ``where`` names the record
    (``file:line``) for error messages."""

    prompts: list[str]
    responses: list[str]
    references: list[list[str]] = field(default_factory=list)
    metas: list[dict] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.responses)
        if len(self.prompts) != n:
            raise LolkitError(f"reward: {len(self.prompts)} prompts for {n} responses")
        self.references = list(self.references) if self.references else [[] for _ in range(n)]
        self.metas = list(self.metas) if self.metas else [{} for _ in range(n)]
        self.messages = list(self.messages) if self.messages else list(self.prompts)
        self.where = list(self.where) if self.where else [f"item {i}" for i in range(n)]
        for name in ("references", "metas", "messages", "where"):
            if len(getattr(self, name)) != n:
                raise LolkitError(f"reward: {len(getattr(self, name))} {name} for {n} responses")

    def __len__(self) -> int:
        return len(self.responses)


class Component(abc.ABC):
    """Base class. Subclasses set ``TYPE``, ``OPTIONS`` (name → default; ``REQUIRED`` for none) and
    implement :meth:`score`. ``outputs`` are the names written into ``rewards`` (one by default: the
    component's name); ``value_range`` is (min, max) of each output, or None when unbounded/unknown."""

    TYPE: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}
    DOC: ClassVar[str] = ""

    def __init__(self, name: str, opts: dict, source: str):
        self.name = name
        self.source = source
        allowed = {**COMMON, **self.OPTIONS}
        for key in opts:
            if key not in allowed:
                raise LolkitError(f"{source}: component '{name}' ({self.TYPE}): unknown key '{key}' "
                                  f"(allowed: {', '.join(sorted(allowed))})")
        missing = [k for k, v in self.OPTIONS.items() if v is REQUIRED and opts.get(k) is None]
        if missing:
            about = f" ({opts['description']})" if opts.get("description") else ""
            raise LolkitError(f"{source}: component '{name}' ({self.TYPE}): missing required key '{missing[0]}'{about}")
        self.opts = {k: opts.get(k, v) for k, v in self.OPTIONS.items()}
        self.weight = _number(opts.get("weight", 1.0), f"{source}: component '{name}': weight")
        self.setup()

    # -- to override -------------------------------------------------------------------------------
    def setup(self) -> None:  # noqa: B027 (an optional hook)
        """Check option values (cheap; no model loading here)."""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def value_range(self) -> tuple[float, float] | None:
        return None

    @property
    def total_range(self) -> tuple[float, float] | None:
        """(min, max) of the sum of this component's outputs."""
        r = self.value_range
        return None if r is None else (r[0] * len(self.outputs), r[1] * len(self.outputs))

    def prepare(self, batch: Batch) -> None:  # noqa: B027 (an optional hook)
        """Called once with every response of the input file before scoring (e.g. to fit TF-IDF)."""

    def fingerprint(self) -> dict:
        """What identifies this component's numbers (for resumable scoring)."""
        return {"type": self.TYPE, "weight": self.weight, **self.opts}

    @abc.abstractmethod
    def score(self, batch: Batch) -> list[float] | dict[str, list[float]]:
        """One value per response (or one list per output name for multi-output components)."""

    # -- helpers -----------------------------------------------------------------------------------
    def error(self, message: str) -> LolkitError:
        return LolkitError(f"reward component '{self.name}' ({self.TYPE}): {message}")

    def opt_choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.opts[key]
        if value not in choices:
            raise LolkitError(f"{self.source}: component '{self.name}': {key} must be one of "
                              f"{', '.join(map(str, choices))}, got {value!r}")
        return value

    def opt_number(self, key: str, *, integer: bool = False, minimum: float | None = None) -> float | int | None:
        value = self.opts[key]
        if value is None:
            return None
        v = _number(value, f"{self.source}: component '{self.name}': {key}")
        if integer and v != int(v):
            raise LolkitError(f"{self.source}: component '{self.name}': {key} must be an integer, got {value!r}")
        if minimum is not None and v < minimum:
            raise LolkitError(f"{self.source}: component '{self.name}': {key} must be >= {minimum}, got {value!r}")
        return int(v) if integer else v

    def need_reference(self, batch: Batch, i: int) -> list[str]:
        refs = batch.references[i]
        if not refs:
            raise LolkitError(f"{batch.where[i]}: reward component '{self.name}' ({self.TYPE}) needs a reference, "
                              "and the record has none (set 'references' in the reward config, e.g. "
                              "references: meta.reference)")
        return refs


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LolkitError(f"{what}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise LolkitError(f"{what}: must be finite, got {value!r}")
    return v


REGISTRY: dict[str, type[Component]] = {}


def register(cls: type[Component]) -> type[Component]:
    REGISTRY[cls.TYPE] = cls
    return cls

