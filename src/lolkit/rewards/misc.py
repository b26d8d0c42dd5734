"""Rewards without a neural model: lexicon sentiment (VADER), any Python callable, built-in tasks."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
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


_LOADED: dict[str, object] = {}  # spec -> function: a file is executed once per process


def is_callable_spec(spec: str) -> bool:
    """``module:function`` or ``path/to/file.py:function`` (a built-in name, preset or YAML path is not)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        return False
    left, _, right = spec.partition(":")
    return bool(left.strip()) and right.isidentifier() and not left.endswith((".yaml", ".yml"))


def load_callable(spec: str, where: str):
    """``package.module:function`` (imported from the installed packages and ``$PYTHONPATH``; the current
    directory is not added to the import path) or ``path/to/file.py:function`` (that file, executed
    once) → the function. The code runs with the user's rights: only a spec from the command line of
    the command being run gets here (a run directory's recorded reward does not, see ``lolkit eval``)."""
    if not is_callable_spec(spec):
        raise LolkitError(f"{where}: expected 'module:function' or 'path/to/file.py:function', got {spec!r}")
    mod_name, _, fn_name = spec.partition(":")
    is_file = mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name
    key = f"{Path(mod_name).expanduser().resolve()}:{fn_name}" if is_file else spec
    if key in _LOADED:
        return _LOADED[key]
    if is_file:
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise LolkitError(f"{where}: {path}: file not found (a reward function given as path/to/file.py:function)")
        module_name = "lolkit_reward_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise LolkitError(f"{where}: {path}: not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module  # dataclasses and pickling-free helpers inside it look it up by name
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(module_name, None)
            raise LolkitError(f"{where}: {path} failed to run ({type(e).__name__}: {e})") from e
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            hint = ""
            local = Path(*mod_name.split(".")).with_suffix(".py")
            if local.is_file():
                hint = f"; the current directory is not on the import path: give the file, {local}:{fn_name}"
            raise LolkitError(f"{where}: cannot import module {mod_name!r} ({e}){hint}") from None
        except Exception as e:
            raise LolkitError(f"{where}: importing {mod_name!r} failed ({type(e).__name__}: {e})") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise LolkitError(f"{where}: {mod_name} has no function {fn_name!r}")
    _LOADED[key] = fn
    return fn


def calling_convention(fn, spec: str, where: str) -> tuple[str, set[str], bool]:
    """How to call a reward function, from its parameter names: ``(prompts, responses, …)`` → once per
    batch (``"batched"``), ``(prompt, response, …)`` → once per response (``"single"``). Returns the
    convention, the optional parameters it names (references / reference / metas / meta) and whether
    it takes extra positional arguments (the old batched signature f(prompts, responses, references, metas))."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if names[:2] == ["prompts", "responses"]:
        kind = "batched"
    elif names[:2] == ["prompt", "response"]:
        kind = "single"
    else:
        raise LolkitError(f"{where}: cannot tell how to call {spec}: name its first two parameters (prompt, response) "
                          "to score one response per call, or (prompts, responses) to score a batch")
    extras = {n for n in names[2:] if n in ("references", "reference", "metas", "meta")}
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 4
    return kind, extras, varargs


@register
class Callable(Component):
    TYPE = "callable"
    OPTIONS = {"function": None, "kwargs": {}, "min": None, "max": None}
    DOC = ("Any Python function ('module:function' or 'path/to/file.py:function'): f(prompt, response) → a "
           "number, or f(prompts, responses) → one number per response; min/max declare its range.")

    def setup(self) -> None:
        if not self.opts["function"]:
            raise LolkitError(f"{self.source}: component '{self.name}' (callable): missing required key 'function' "
                              "(e.g. function: mypackage.rewards:score)")
        if not isinstance(self.opts["kwargs"], dict):
            raise LolkitError(f"{self.source}: component '{self.name}': kwargs must be a mapping")
        self.lo = self.opt_number("min")
        self.hi = self.opt_number("max")
        # imported now, not at the first score: a missing module or a wrong signature fails before any
        # run directory or output exists
        where = f"{self.source}: component '{self.name}'"
        self._fn = load_callable(self.opts["function"], where)
        self.kind, self.extras, self.varargs = calling_convention(self._fn, self.opts["function"], where)

    @property
    def value_range(self):
        return (self.lo, self.hi) if self.lo is not None and self.hi is not None else None

    def _call(self, batch: Batch):
        refs = [list(r) for r in batch.references]
        metas = [dict(m) for m in batch.metas]
        kw = dict(self.opts["kwargs"])
        if self.kind == "batched":
            if self.varargs:
                return self._fn(list(batch.prompts), list(batch.responses), refs, metas, **kw)
            extra = {"references": refs, "metas": metas}
            return self._fn(list(batch.prompts), list(batch.responses),
                            **{k: v for k, v in extra.items() if k in self.extras}, **kw)
        out = []
        for i, (p, r) in enumerate(zip(batch.prompts, batch.responses, strict=True)):
            extra = {"references": refs[i], "reference": refs[i][0] if refs[i] else None, "meta": metas[i]}
            out.append(self._fn(p, r, **{k: v for k, v in extra.items() if k in self.extras}, **kw))
        return out

    def score(self, batch: Batch) -> list[float]:
        spec = self.opts["function"]
        try:
            values = self._call(batch)
        except LolkitError:
            raise
        except Exception as e:  # the user's code failed: say where, in one line (--debug shows the traceback)
            raise self.error(f"{spec} raised {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            what = "a number" if self.kind == "single" else "a list of numbers"
            raise self.error(f"{spec} must return {what}") from None
        if len(values) != len(batch):
            raise self.error(f"{spec} returned {len(values)} values for {len(batch)} responses")
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
