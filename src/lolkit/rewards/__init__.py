"""Rewards: named components combined by a weighted sum.

A reward is given by a *spec*: a built-in task (``colours``, ``numbers``, ``dates``), a preset shipped
with lolkit (``hh``, ``reddit``, ``wow``, ``faithdial``, ``comet`` — see ``rewards/presets/``), a reward
model (``rm:PATH``, a folder trained by ``lolkit train --algo rm``), a Python function (``module:function``
or ``path/to/file.py:function``) or the path of a YAML reward config::

    name: my-reward
    extends: reddit            # optional: start from a preset or another config file
    models:                    # optional: replace components' model paths (e.g. local copies)
      fluency: /models/roberta-base-CoLA
    references: meta.reference # where reference texts live in a record (default: auto)
    batch_size: 64             # responses per scoring step (each step is saved for resuming)
    components:
      fluency: {type: hf_classifier, model: textattack/roberta-base-CoLA, output: prob, label: 1}
      tfidf:   {type: tfidf, weight: 0.5}

``reward = Σ weight × component`` (rounded to 10 decimals to drop float noise) and ``rewards`` keeps
each component's unweighted value under its name. Unknown keys are errors naming the file and key.
See docs/rewards.md for every component and option.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LolkitError
from .base import REGISTRY, Batch, Component
from .misc import is_callable_spec

PRESET_DIR = Path(__file__).parent / "presets"
TOP_KEYS = ("name", "description", "extends", "models", "references", "batch_size", "components")
RM_PREFIX = "rm:"  # rm:PATH, a reward model trained by `lolkit train --algo rm`
REFERENCE_AUTO = ("references", "reference", "meta.references", "meta.reference")


def component_types() -> dict[str, type[Component]]:
    """Every component type by its ``type`` name (the modules register their classes when imported)."""
    from . import classifier, embedding, lexical, misc, reference  # noqa: F401

    return REGISTRY


class Reward:
    """A weighted sum of components. ``components`` lists the names written into ``rewards``;
    ``max_value`` is Σ weight × component maximum, or None when a component's range is unknown
    (a raw logit, a length without normalisation, a callable without min/max)."""

    def __init__(self, name: str, parts: list[Component], *, references: str | None = None,
                 batch_size: int = 64, source: str = "", spec: dict | None = None):
        self.name = name
        self.parts = parts
        self.references_field = references
        self.batch_size = batch_size
        self.source = source
        self.spec = spec or {}
        seen: dict[str, str] = {}
        for p in parts:
            for out in p.outputs:
                if out in seen:
                    raise LolkitError(f"{source}: components '{seen[out]}' and '{p.name}' both write rewards['{out}']")
                seen[out] = p.name

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(o for p in self.parts for o in p.outputs)

    @property
    def max_value(self) -> float | None:
        total = 0.0
        for p in self.parts:
            r = p.total_range
            if r is None:
                return None
            total += max(p.weight * r[0], p.weight * r[1])
        return total

    def fingerprint(self) -> str:
        """Identifies the numbers this reward gives: every component's type, weight and options
        (and fitted-corpus digests); model weights are identified by their path only."""
        desc = {"references": self.references_field, "components": [[p.name, p.fingerprint()] for p in self.parts]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()

    def references_of(self, obj: dict) -> list[str]:
        """Reference texts of a raw record (a string or a list of strings at ``references``)."""
        fields = (self.references_field,) if self.references_field else REFERENCE_AUTO
        for f in fields:
            node: Any = obj
            for part in f.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                continue
            if isinstance(node, str):
                return [node]
            if isinstance(node, list) and all(isinstance(x, str) for x in node):
                return list(node)
            raise LolkitError(f"field '{f}': references must be a string or a list of strings")
        return []

    def prepare(self, batch: Batch) -> None:
        for p in self.parts:
            p.prepare(batch)

    def score_batch(self, batch: Batch) -> list[tuple[float, dict[str, float]]]:
        per_output: dict[str, list[float]] = {}
        totals = [0.0] * len(batch)
        for p in self.parts:
            values = p.score(batch)
            if not isinstance(values, dict):
                values = {p.name: values}
            for out, vals in values.items():
                if len(vals) != len(batch):
                    raise LolkitError(f"reward component '{p.name}' gave {len(vals)} values for {len(batch)} responses")
                per_output[out] = [float(v) for v in vals]
                for i, v in enumerate(vals):
                    totals[i] += p.weight * float(v)
        names = self.components
        return [(round(totals[i], 10), {n: per_output[n][i] for n in names}) for i in range(len(batch))]

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, references: Sequence[Sequence[str]] | None = None,
              metas: Sequence[dict] | None = None) -> list[tuple[float, dict[str, float]]]:
        """``(reward, {component: value})`` for each (prompt, response); ``references`` (texts per
        response) and ``metas`` (the records' ``meta``) feed the components that need them."""
        batch = Batch(list(prompts), list(responses), [list(r) for r in references] if references else [],
                      list(metas) if metas else [])
        return self.score_batch(batch)

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, components={self.components}, max_value={self.max_value})"


# ------------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------------
def available() -> list[str]:
    """Built-in task rewards."""
    from ..tasks import TASKS

    return sorted(TASKS)


def presets() -> dict[str, str]:
    """Preset name → its one-line description."""
    import yaml

    out = {}
    for p in sorted(PRESET_DIR.glob("*.yaml")):
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        out[p.stem] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_raw(spec: str, depth: int = 0, relative_to: Path | None = None) -> tuple[dict, str]:
    """A spec string → (raw config dict with ``extends`` resolved, source name)."""
    from ..config import load_yaml

    if depth > 8:
        raise LolkitError(f"{spec}: 'extends' nests too deeply (a cycle?)")
    path = Path(spec).expanduser()
    if relative_to is not None and not path.is_absolute() and (relative_to / path).is_file():
        path = relative_to / path
    if spec.startswith(RM_PREFIX):  # rm:PATH: a reward model's raw logit on its training sequence
        target = spec[len(RM_PREFIX):]
        if not target.strip():
            raise LolkitError(f"reward {spec!r}: rm: needs a reward-model folder, e.g. rm:runs/rm/final")
        data, source = {"name": "rm", "components": {"rm": {"type": "hf_classifier", "model": target, "output": "logit",
                                                            "input": "reward_model"}}}, spec
    elif path.is_file() or spec.endswith((".yaml", ".yml")):
        data, source = load_yaml(path), str(path)
        data.setdefault("name", path.stem)
    elif spec in available():
        data, source = {"name": spec, "components": {spec: {"type": "task", "task": spec}}}, f"builtin:{spec}"
    elif "/" not in spec and (PRESET_DIR / f"{spec}.yaml").is_file():
        data, source = load_yaml(PRESET_DIR / f"{spec}.yaml"), f"preset:{spec}"
        data.setdefault("name", spec)
    elif is_callable_spec(spec):
        fn = spec.rpartition(":")[2]
        data, source = {"name": fn, "components": {fn: {"type": "callable", "function": spec}}}, spec
    else:
        raise LolkitError(f"unknown reward {spec!r}: not a file, a built-in task ({', '.join(available())}), "
                          f"a preset ({', '.join(presets())}), a reward model (rm:PATH) or a function (module:function, path/to/file.py:function)")
    for key in data:
        if key not in TOP_KEYS:
            raise LolkitError(f"{source}: unknown key '{key}' (allowed: {', '.join(TOP_KEYS)})")
    if data.get("extends"):
        base_spec = data["extends"]
        if not isinstance(base_spec, str):
            raise LolkitError(f"{source}: 'extends' must be a preset name or a file path")
        base, _ = _load_raw(base_spec, depth + 1, path.parent if path.is_file() else None)
        top = {k: v for k, v in data.items() if k != "extends"}
        data = _deep_merge(base, top)
        if "name" not in top:
            data["name"] = path.stem if path.is_file() else spec
    return data, source


def build_reward(data: dict, source: str = "reward config", default_name: str = "reward") -> Reward:
    """A validated :class:`Reward` from a config dict (``extends`` already resolved)."""
    for key in data:
        if key not in TOP_KEYS:
            raise LolkitError(f"{source}: unknown key '{key}' (allowed: {', '.join(TOP_KEYS)})")
    comps = data.get("components")
    if not isinstance(comps, dict) or not comps:
        raise LolkitError(f"{source}: 'components' must be a non-empty mapping of name -> settings")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise LolkitError(f"{source}: 'models' must be a mapping of component name -> model path")
    for cname, path in models.items():
        if cname not in comps:
            raise LolkitError(f"{source}: models: no component named '{cname}' (components: {', '.join(comps)})")
        if not isinstance(comps[cname], dict) or "model" not in component_types().get(
                comps[cname].get("type"), Component).OPTIONS:
            raise LolkitError(f"{source}: models: component '{cname}' takes no model")
        comps[cname] = {**comps[cname], "model": path}
    refs = data.get("references")
    if refs is not None and (not isinstance(refs, str) or refs == "auto"):
        if refs != "auto":
            raise LolkitError(f"{source}: 'references' must be a field path such as meta.reference, or auto")
        refs = None
    batch_size = data.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LolkitError(f"{source}: 'batch_size' must be a positive integer, got {batch_size!r}")
    types = component_types()
    parts: list[Component] = []
    for cname, opts in comps.items():
        if not isinstance(opts, dict):
            raise LolkitError(f"{source}: component '{cname}': expected a mapping of settings, got {opts!r}")
        ctype = opts.get("type")
        if ctype not in types:
            raise LolkitError(f"{source}: component '{cname}': unknown type {ctype!r} "
                              f"(types: {', '.join(sorted(types))})")
        parts.append(types[ctype](str(cname), opts, source))
    return Reward(str(data.get("name") or default_name), parts, references=refs, batch_size=batch_size,
                  source=source, spec=data)


def spec_runs_code(spec: str) -> str | None:
    """What Python code a reward spec would run (a function, or a classifier's own code through
    ``trust_remote_code``), in a few words; None for a built-in task, a preset or a config without any.
    Nothing is imported to find out."""
    if not isinstance(spec, str):
        return None
    data, _ = _load_raw(spec)
    comps = data.get("components")
    for name, opts in (comps.items() if isinstance(comps, dict) else []):
        if not isinstance(opts, dict):
            continue
        if opts.get("type") == "callable":
            return f"component '{name}' imports {opts.get('function')}"
        if opts.get("trust_remote_code"):
            return f"component '{name}' sets trust_remote_code"
    return None


def get_reward(spec: str | dict | Reward, overrides: dict | None = None) -> Reward:
    """A reward from a built-in task name, a preset name, a YAML path or a config dict;
    ``overrides`` (nested dict, e.g. from ``--set components.fluency.model=DIR``) are merged on top."""
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, dict):
        data, source = copy.deepcopy(spec), "reward config"
        if data.get("extends"):
            base, _ = _load_raw(str(data.pop("extends")))
            data = _deep_merge(base, data)
    else:
        data, source = _load_raw(str(spec))
    if overrides:
        data = _deep_merge(data, overrides)
    return build_reward(data, source, default_name=str(spec) if isinstance(spec, str) else "reward")
