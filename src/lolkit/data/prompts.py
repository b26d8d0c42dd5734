"""The prompts of the loops that generate (PPO / NLPO, the feedback loops, CoLA's latent RL): which
prompts, their encoding with every cut counted (:func:`lolkit.data.tokenize.encode_prompts`), the
validation prompts, and which prompts each iteration uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import LolkitError


@dataclass
class PromptRecord:
    prompt: object  # as the data gives it (text or messages), rendered for the model with its chat template
    text: str  # the prompt's text, what the reward reads
    meta: dict
    line: int | None


def load_prompt_records(train: str | None, task: str, seed: int) -> list[PromptRecord]:
    """Every training prompt: of ``train`` (records or prompt-only rows), else of the built-in ``task``'s
    training split (each distinct prompt once)."""
    from .schema import load_prompts, prompt_text

    if train:
        recs = [(r.prompt, r.meta, r.line) for r in load_prompts(train)]
    else:
        from ..tasks import get_task

        seen: dict[str, tuple] = {}
        for k, row in enumerate(get_task(task).records("train", seed)):
            seen.setdefault(row["prompt"], (row.get("meta") or {}, k + 1))
        recs = [(p, m, line) for p, (m, line) in seen.items()]
    if not recs:
        raise LolkitError(f"{train or task}: no prompts")
    return [PromptRecord(p, prompt_text(p), m, line) for p, m, line in recs]


@dataclass
class LoopPrompts:
    """The training prompts a generating loop samples from, encoded: ``ids[i]`` belongs to ``records[i]``
    (prompts dropped by ``data.truncation=drop`` are gone from both)."""

    records: list[PromptRecord]
    ids: list[list[int]]
    encoded: object  # lolkit.data.tokenize.Prompts: limits and the truncation report

    def truncation(self) -> dict:
        return self.encoded.to_json()


def encode_loop_prompts(cfg, tokenizer, *, window: int | None, reserve: int, model_path: str, log) -> LoopPrompts:
    """The training prompts of ``cfg`` (a TrainConfig), encoded for sampling ``reserve`` new tokens; cuts are
    counted and reported (``data.truncation``: warn, error or drop)."""
    from .tokenize import encode_prompts, render_prompt

    records = load_prompt_records(cfg.data.train, cfg.data.task, cfg.seed)
    source = cfg.data.train or f"builtin:{cfg.data.task}/train"
    cut = encode_prompts(tokenizer, [render_prompt(tokenizer, r.prompt) for r in records], setting=cfg.data.max_prompt_len,
                         window=window, reserve=reserve, policy=cfg.data.truncation, split="train",
                         where=lambda i: (source, records[i].line), model=model_path)
    cut.report(log)
    return LoopPrompts([records[i] for i in cut.kept], cut.ids, cut)


@dataclass
class ValidationPrompts:
    rendered: list[str]  # for the model
    texts: list[str]  # for the reward
    records: list  # the records, for the reward's references and meta
    truncation: dict


def load_validation(cfg, tokenizer, *, window: int | None, model_path: str, log) -> ValidationPrompts | None:
    """Validation prompts of a generating loop: ``--val-data``, else the built-in task's validation split
    (when training on a task); None when there are none (training on a prompts file alone). At most
    ``eval_prompts``, cut to leave room for ``eval.max_new_tokens`` (counted like the training prompts')."""
    from .dataset import builtin_records
    from .schema import load_prompts, prompt_text, unique_prompts
    from .tokenize import encode_prompts, render_prompt

    if cfg.data.val:
        recs = load_prompts(cfg.data.val)
    elif cfg.data.train is None:
        recs = builtin_records(cfg.data.task, "val")
    else:
        return None
    records = unique_prompts(recs)[: cfg.eval_prompts]
    if not records:
        return None
    rendered = [render_prompt(tokenizer, r.prompt) for r in records]
    source = cfg.data.val or f"builtin:{cfg.data.task}/val"
    cut = encode_prompts(tokenizer, rendered, setting=cfg.data.max_prompt_len, window=window,
                         reserve=cfg.eval.max_new_tokens, policy=cfg.data.truncation, split="val",
                         where=lambda i: (source, records[i].line), model=model_path)
    cut.report(log)
    if not cut.kept:
        return None
    return ValidationPrompts([rendered[i] for i in cut.kept], [prompt_text(records[i].prompt) for i in cut.kept],
                             [records[i] for i in cut.kept], cut.truncation.to_json())


def iteration_prompts(n_prompts: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Which prompts rollout ``iteration`` uses: a pure function of (seed, iteration)."""
    rng = random.Random(f"lolkit-online-{seed}-{iteration}")
    return rng.sample(range(n_prompts), batch_size) if n_prompts >= batch_size else rng.choices(range(n_prompts), k=batch_size)
