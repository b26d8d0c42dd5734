"""Rewards without a neural model: lexicon sentiment (VADER), any Python callable, built-in tasks."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

from ..errors import LolkitError
from .base import Batch, Component, register


@register
class Vader(Component):
    TYPE = "vader"
    OPTIONS = {"output": "compound01"}
    DOC = ("VADER sentiment of the response (vaderSentiment, lexicon bundled): compound01 = (compound + 1) / 2 "
           "in [0, 1]; compound in [-1, 1]; pos / neu / neg proportions in [0, 1].")

    def setup(self) -> None:
        self.opt_choice("output", ("compound01", "compound", "pos", "neu", "neg"))
        self._sia = None

    @property
    def value_range(self):
        return (-1.0, 1.0) if self.opts["output"] == "compound" else (0.0, 1.0)

    def score(self, batch: Batch) -> list[float]:
        if self._sia is None:
            try:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            except ImportError:
                raise LolkitError("the vader reward needs the vaderSentiment package: "
                                  "pip install vaderSentiment (or pip install 'lolkit[metrics]')") from None
            self._sia = SentimentIntensityAnalyzer()
        key = self.opts["output"]
        out = []
        for r in batch.responses:
            s = self._sia.polarity_scores(r)
            out.append((s["compound"] + 1.0) / 2.0 if key == "compound01" else float(s[key]))
        return out


def load_callable(spec: str, where: str):
    """``package.module:function`` → the function (the current directory is importable)."""
    import sys

    if not isinstance(spec, str) or ":" not in spec:
        raise LolkitError(f"{where}: expected 'module:function', got {spec!r}")
    mod_name, _, fn_name = spec.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise LolkitError(f"{where}: cannot import module {mod_name!r} ({e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise LolkitError(f"{where}: module {mod_name!r} has no function {fn_name!r}")
    return fn


@register
class Callable(Component):
    TYPE = "callable"
    OPTIONS = {"function": None, "kwargs": {}, "min": None, "max": None}
    DOC = ("Any Python function 'module:function' called as f(prompts, responses, references, metas, **kwargs) "
           "and returning one number per response; min/max declare its range (for max_value).")

    def setup(self) -> None:
        if not self.opts["function"]:
            raise LolkitError(f"{self.source}: component '{self.name}' (callable): missing required key 'function' "
                              "(e.g. function: mypackage.rewards:score)")
        if not isinstance(self.opts["kwargs"], dict):
            raise LolkitError(f"{self.source}: component '{self.name}': kwargs must be a mapping")
        self.lo = self.opt_number("min")
        self.hi = self.opt_number("max")
        self._fn = None

    @property
    def value_range(self):
        return (self.lo, self.hi) if self.lo is not None and self.hi is not None else None

    def score(self, batch: Batch) -> list[float]:
        if self._fn is None:
            self._fn = load_callable(self.opts["function"], f"{self.source}: component '{self.name}'")
        values = self._fn(list(batch.prompts), list(batch.responses), [list(r) for r in batch.references],
                          [dict(m) for m in batch.metas], **self.opts["kwargs"])
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise self.error(f"{self.opts['function']} must return a list of numbers") from None
        if len(values) != len(batch):
            raise self.error(f"{self.opts['function']} returned {len(values)} values for {len(batch)} responses")
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise LolkitError(f"{batch.where[i]}: reward component '{self.name}' returned {v}")
        return values


@register
class Task(Component):
    TYPE = "task"
    OPTIONS = {"task": None}
    DOC = "A built-in task's programmatic reward (colours); its own components appear in rewards."

    def setup(self) -> None:
        from ..tasks import get_task

        if not self.opts["task"]:
            raise LolkitError(f"{self.source}: component '{self.name}' (task): missing required key 'task'")
        self.task = get_task(self.opts["task"])

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.task.COMPONENTS)

    @property
    def total_range(self) -> tuple[float, float]:
        return (0.0, float(self.task.MAX_REWARD))

    def score(self, batch: Batch) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {c: [] for c in self.outputs}
        for p, r in zip(batch.prompts, batch.responses, strict=True):
            comps = self.task.score(p, r)
            for c in self.outputs:
                out[c].append(comps[c])
        return out
