"""Where ALT-LMU / ALT-LMC get their feedback (what each algorithm conditions on is
:mod:`lolkit.feedback.conditions`).

LMU / LMC feedback comes from a :class:`RuleProvider` (the reward's components), a
:class:`ModelProvider` (a local instruction model prompted as a critic; ``smollm2`` works offline)
or a :class:`FileProvider` (a JSONL file of human feedback).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LolkitError, data_error


@dataclass(frozen=True)
class Feedback:
    text: str
    score: float
    category: int | None = None
    parsed: bool = True


def rule_text(components: dict[str, float], reward: float) -> str:
    """Free-text feedback from the reward's components: which were met and which were missed."""
    if not components or len(components) == 1:
        return f"the answer scores {reward:.2f}."
    met = [k for k, v in components.items() if v > 0]
    missed = [k for k, v in components.items() if v <= 0]
    parts = []
    if met:
        parts.append("good " + ", ".join(met))
    if missed:
        parts.append("missing " + ", ".join(missed))
    return "; ".join(parts) + "."


def category_of(value: float, lo: float, hi: float, n: int) -> int:
    """Category index (0 = best) of a value in [lo, hi] cut into n equal bands.

    Golden (n = 3, [0, 1]): 1.0 → 0, 0.4 → 1 (⌊0.6·3⌋ = 1), 0.2 → 2, 0.0 → 2."""
    if hi <= lo:
        return 0
    frac = (hi - value) / (hi - lo)
    return min(n - 1, max(0, int(frac * n)))


class RuleProvider:
    """LMU: the components met / missed as text, score = reward. LMC: the reward's band of
    [min, max] (the reward's range when known, else the iteration's) as a category."""

    name = "rule"

    def __init__(self, kind: str, categories: Sequence[str], max_value: float | None):
        self.kind, self.categories, self.max_value = kind, list(categories), max_value

    def __call__(self, prompts, responses, rewards, components) -> list[Feedback]:
        if self.kind == "lmu":
            return [Feedback(rule_text(c, r), float(r)) for r, c in zip(rewards, components, strict=True)]
        lo = min(0.0, *rewards) if self.max_value is not None else min(rewards)
        hi = self.max_value if self.max_value is not None else max(rewards)
        out = []
        for r in rewards:
            k = category_of(r, lo, hi, len(self.categories))
            out.append(Feedback(self.categories[k], float(r), k))
        return out


_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"\b(10|[1-9])\b")


def parse_critique(text: str, kind: str, categories: Sequence[str]) -> Feedback:
    """Read a critic's answer. LMU: the score after "Score:" (else the first number 1–10), the text
    after "Feedback:" (else the first line); unreadable → score 5.5, the middle of 1–10, parsed False.
    LMC: the first category word in the answer; none → the middle category, parsed False.

    Golden: "Feedback: names the wrong colour. Score: 3" → ("names the wrong colour.", 3.0)."""
    raw = " ".join(text.split())
    if kind == "lmc":
        hits = [(m.start(), k) for k, c in enumerate(categories)
                for m in [re.search(rf"\b{re.escape(c)}\b", raw, re.IGNORECASE)] if m]
        if hits:
            k = min(hits)[1]
            return Feedback(categories[k], float(-k), k)
        k = len(categories) // 2
        return Feedback(categories[k], float(-k), k, parsed=False)
    m = _SCORE.search(raw)
    score = float(m.group(1)) if m else None
    if score is None:
        m2 = _NUMBER.search(raw)
        score = float(m2.group(1)) if m2 else None
    body = raw
    f = re.search(r"feedback\s*:\s*(.*?)(?:\bscore\b|$)", raw, re.IGNORECASE)
    if f and f.group(1).strip():
        body = f.group(1).strip()
    elif text.strip():
        body = _SCORE.sub("", text).strip().splitlines()[0].strip(" .:") if _SCORE.sub("", text).strip() else ""
    body = body[:200] or "no feedback."
    if score is None:
        return Feedback(body, 5.5, parsed=False)
    return Feedback(body, min(10.0, max(1.0, score)))


LMU_PROMPT = ("You are a strict critic. Read the question and the answer, give the answer a score from 1 (worst) "
              "to 10 (best) and write one sentence of feedback about it.\n\nQuestion: {prompt}\n"
              "Answer: {response}\n\nReply exactly as: Score: <1-10>. Feedback: <one sentence>")
LMC_PROMPT = ("You are a strict critic. Read the question and the answer and classify the answer as one of: "
              "{categories}.\n\nQuestion: {prompt}\nAnswer: {response}\n\nReply exactly as: Category: <one of "
              "{categories}>")
# The critic's reply is started for it, so that a small model answers in the form asked for.
PREFILL = {"lmu": "Score:", "lmc": "Category:"}


class ModelProvider:
    """A local instruction model prompted as a critic (greedy, deterministic).

    Under N processes (``shards``, :mod:`lolkit.shards`) each process loads the critic on its own device and
    generates its share of the critic's batches (batch ``b`` by process ``b mod N``); the answers are
    gathered in order, so every process reads the feedback one process would."""

    name = "model"

    def __init__(self, kind: str, categories: Sequence[str], model_name: str, max_new_tokens: int,
                 batch_size: int, max_prompt_len: int = 512, quiet: bool = True, shards=None, device=None):
        self.kind, self.categories, self.quiet = kind, list(categories), quiet
        self.model_name, self.max_new_tokens = model_name, max_new_tokens
        self.batch_size, self.max_prompt_len = batch_size, max_prompt_len
        self.shards, self.device = shards, device
        self._model = None

    def _load(self):
        if self._model is None:
            import torch

            from ..models import ModelConfig, load_model

            # the process's own device (one GPU per process under a launcher), not every process on cuda:0
            device = self.device if self.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = load_model(ModelConfig(name=self.model_name), trainable=False, device=device)[:2]
        return self._model

    def __call__(self, prompts, responses, rewards, components) -> list[Feedback]:
        from ..data.tokenize import render_prompt
        from ..generation import GenerationConfig, generate_shared
        from ..progress import CountProgress
        from ..shards import Shards

        model, tok = self._load()
        template = LMU_PROMPT if self.kind == "lmu" else LMC_PROMPT
        texts = []
        for p, r in zip(prompts, responses, strict=True):
            ask = template.format(prompt=p, response=r, categories=", ".join(self.categories))
            texts.append((render_prompt(tok, [{"role": "user", "content": ask}]) if getattr(tok, "chat_template", None)
                          else ask + "\n") + PREFILL[self.kind])
        gcfg = GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                max_prompt_len=self.max_prompt_len)
        shards = self.shards or Shards()
        with CountProgress("critic", len(texts), disable=self.quiet or not shards.is_main) as bar:
            outs = generate_shared(model, tok, texts, gcfg, shards, progress=bar.advance)
        return [parse_critique(PREFILL[self.kind] + o[0].text, self.kind, self.categories) for o in outs]


class FileProvider:
    """Human feedback from a JSONL file: one row per (prompt, response) with ``feedback`` (text) and
    ``score`` (LMU, a number) or ``category`` (LMC, one of the categories). Samples the file does not
    cover stop the run with the list of what is missing; the samples are in ``iter-K/samples.jsonl``,
    so annotate them, add them to the file and ``--resume`` (sampling is seeded: the same samples)."""

    name = "file"

    def __init__(self, kind: str, categories: Sequence[str], path: str):
        from ..io import iter_jsonl

        self.kind, self.categories, self.path = kind, list(categories), path
        if not Path(path).is_file():
            raise LolkitError(f"{path}: feedback file not found (feedback.file)")
        self.table: dict[tuple[str, str], Feedback] = {}
        for line, row in iter_jsonl(path):
            for key in ("prompt", "response", "feedback"):
                if not isinstance(row.get(key), str):
                    raise data_error(path, line, key, "missing or not a string")
            if kind == "lmu":
                s = row.get("score")
                if isinstance(s, bool) or not isinstance(s, (int, float)) or s != s:
                    raise data_error(path, line, "score", f"expected a number, got {s!r}")
                fb = Feedback(row["feedback"], float(s))
            else:
                c = row.get("category")
                if c not in self.categories:
                    raise data_error(path, line, "category", f"expected one of {self.categories}, got {c!r}")
                k = self.categories.index(c)
                fb = Feedback(c if not row["feedback"] else row["feedback"], float(-k), k)
            self.table[(row["prompt"], row["response"])] = fb

    def __call__(self, prompts, responses, rewards, components) -> list[Feedback]:
        missing = [(p, r) for p, r in zip(prompts, responses, strict=True) if (p, r) not in self.table]
        if missing:
            p, r = missing[0]
            raise LolkitError(f"{self.path}: no human feedback for {len(missing)} of {len(prompts)} samples (first: "
                              f"prompt {p!r}, response {r!r}); the samples are in the iteration's samples.jsonl — add "
                              "rows {prompt, response, feedback, " + ("score" if self.kind == "lmu" else "category")
                              + "} and rerun with --resume")
        return [self.table[(p, r)] for p, r in zip(prompts, responses, strict=True)]


def make_provider(cfg, kind: str, reward, quiet: bool = True, dist=None):
    """The provider of ``cfg.feedback`` for feedback of ``kind``: lmu (text + score) or lmc (a category).
    ``dist`` (:class:`lolkit.distributed.Dist`): the loop's processes, which share a critic model's work."""
    f = cfg.feedback
    if f.provider == "rule":
        return RuleProvider(kind, f.categories, None if reward is None else reward.max_value)
    if f.provider == "model":
        return ModelProvider(kind, f.categories, f.critic_model, f.critic_max_new_tokens, cfg.eval.batch_size,
                             quiet=quiet, shards=None if dist is None else dist.shards,
                             device=None if dist is None else dist.device)
    return FileProvider(kind, f.categories, f.file)
