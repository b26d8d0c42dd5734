"""``lolkit compare``: pairwise comparison of two evaluations' generations.

The generations of run A and run B (``generations.jsonl`` written by ``lolkit eval``) are paired by
prompt id and sample index, and a judge decides, for each pair, whether A's response wins, ties or
loses against B's:

* ``reward:SPEC`` — any reward spec (task, preset, YAML): both responses are scored; A wins when
  ``r_A − r_B > tie_margin``, loses when ``r_B − r_A > tie_margin``, else ties.
* ``llm:MODEL`` — a local causal LM (e.g. ``smollm2``) reads the prompt and both responses and is
  asked which is better. It does not generate: its preference is the log-probability of answering
  "A" versus "B" (teacher-forced). Each pair is judged in both orders (A's response first, then
  second); A wins only when both orders prefer it, loses only when both prefer B, and ties when the
  orders disagree (position bias) or the margins are exactly zero.

Win / tie / loss rates come with 95 % Wilson score intervals (each rate as a binomial proportion
over pairs; with several samples per prompt the pairs are not independent and the interval is
optimistic). Writes ``OUT/comparison.json`` and ``OUT/pairs.jsonl`` (one row per pair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .errors import LolkitError
from .io import iter_jsonl, write_json, write_jsonl
from .metrics import wilson_interval

JUDGE_TEMPLATE = ("Here is a prompt and two candidate responses. Decide which response is better: more helpful, "
                  "correct, relevant and fluent.\n\n### Prompt:\n{prompt}\n\n### Response A:\n{a}\n\n"
                  "### Response B:\n{b}\n\nWhich response is better? Answer with a single letter, A or B.")


def load_generations(path: str) -> tuple[Path, list[dict]]:
    """``path`` is an eval directory (holding generations.jsonl) or the JSONL file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "generations.jsonl"
    if not p.is_file():
        raise LolkitError(f"{path}: no generations.jsonl (run `lolkit eval` first)")
    rows = []
    for line, obj in iter_jsonl(p):
        for f in ("prompt", "response"):
            if not isinstance(obj.get(f), str):
                raise LolkitError(f"{p}:{line}: field '{f}': expected a string")
        rows.append(obj)
    return p, rows


def _key(row: dict) -> tuple:
    return (str(row["id"]) if row.get("id") is not None else row["prompt"], int(row.get("sample", 0)))


def pair_rows(a: list[dict], b: list[dict]) -> tuple[list[tuple[dict, dict]], int, int]:
    """Pairs (row of A, row of B) with the same prompt id (else prompt text) and sample index, in A's
    order; and the numbers of A's and B's rows without a partner."""
    index_b = {}
    for r in b:
        index_b.setdefault(_key(r), r)
    pairs = [(r, index_b[_key(r)]) for r in a if _key(r) in index_b]
    keys_a = {_key(r) for r in a}
    return pairs, len(a) - len(pairs), sum(1 for k in index_b if k not in keys_a)


# --------------------------------------------------------------------------------------------------
# judges: judge(prompts, responses_a, responses_b) -> one dict per pair with an "outcome"
# --------------------------------------------------------------------------------------------------
class RewardJudge:
    def __init__(self, spec: str, tie_margin: float = 0.0):
        from .rewards import get_reward

        self.reward = get_reward(spec)
        self.name = f"reward:{spec}"
        self.tie_margin = tie_margin

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[dict]:
        ra = self.reward.score(prompts, a)
        rb = self.reward.score(prompts, b)
        out = []
        for (sa, _), (sb, _) in zip(ra, rb, strict=True):
            d = sa - sb
            outcome = "win" if d > self.tie_margin else "loss" if -d > self.tie_margin else "tie"
            out.append({"outcome": outcome, "score_a": sa, "score_b": sb})
        return out


class LLMJudge:
    """A causal LM as judge: log p("A") vs log p("B") after the judging prompt, in both orders."""

    def __init__(self, model: str, batch_size: int = 8, max_context: int = 1024):
        import torch

        from .models import ModelConfig, load_model

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer, _ = load_model(ModelConfig(name=model), trainable=False, device=device)
        self.name = f"llm:{model}"
        self.batch_size = batch_size
        self.max_context = max_context
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        # after a chat template's assistant header the answer starts the turn; after plain text, " A"
        self.answers = ("A", "B") if chat else (" A", " B")
        self.chat = chat

    def context(self, prompt: str, first: str, second: str) -> str:
        text = JUDGE_TEMPLATE.format(prompt=prompt, a=first, b=second)
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                      tokenize=False)
        return text + "\nAnswer:"

    def answer_logprobs(self, contexts: list[str]) -> list[tuple[float, float]]:
        """(log p(answer A | context), log p(answer B | context)) for each context."""
        import torch

        from .data.tokenize import Encoded, collate, encode_prompt
        from .logprobs import forward_logprobs

        tok = self.tokenizer
        cand = [tuple(tok(x, add_special_tokens=False)["input_ids"]) for x in self.answers]
        items = []
        for c in contexts:
            ids = tuple(encode_prompt(tok, c, self.max_context))
            items += [Encoded(ids, cand[0], False), Encoded(ids, cand[1], False)]
        device = next(self.model.parameters()).device
        out: list[float] = []
        with torch.no_grad():
            for s in range(0, len(items), self.batch_size):
                chunk = items[s : s + self.batch_size]
                seq, _, _ = forward_logprobs(self.model, collate(chunk, range(len(chunk)), tok.pad_token_id).to(device))
                out += seq.tolist()
        return [(out[2 * i], out[2 * i + 1]) for i in range(len(contexts))]

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[dict]:
        ctx = [self.context(p, x, y) for p, x, y in zip(prompts, a, b, strict=True)]
        ctx += [self.context(p, y, x) for p, x, y in zip(prompts, a, b, strict=True)]
        lp = self.answer_logprobs(ctx)
        n = len(prompts)
        out = []
        for i in range(n):
            m1 = lp[i][0] - lp[i][1]  # A's response shown first: > 0 prefers it
            m2 = lp[n + i][1] - lp[n + i][0]  # A's response shown second (as "B"): > 0 prefers it
            v1, v2 = _sign(m1), _sign(m2)
            outcome = "win" if v1 == v2 == 1 else "loss" if v1 == v2 == -1 else "tie"
            p_a = (_sigmoid(m1) + _sigmoid(m2)) / 2
            out.append({"outcome": outcome, "margin_a_first": m1, "margin_a_second": m2, "p_a_better": p_a,
                        "consistent": v1 == v2 and v1 != 0})
        return out


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def make_judge(spec: str, tie_margin: float = 0.0, batch_size: int = 8):
    kind, _, arg = spec.partition(":")
    if kind == "reward" and arg:
        return RewardJudge(arg, tie_margin)
    if kind == "llm" and arg:
        return LLMJudge(arg, batch_size=batch_size)
    raise LolkitError(f"--judge {spec!r}: expected reward:SPEC (a task, preset or reward YAML) or llm:MODEL")


def outcome_stats(outcomes: Sequence[str]) -> dict:
    """Counts, rates and 95 % Wilson intervals of win / tie / loss (from A's side)."""
    n = len(outcomes)
    out: dict = {"pairs": n}
    for name, plural in (("win", "wins"), ("tie", "ties"), ("loss", "losses")):
        k = sum(1 for o in outcomes if o == name)
        lo, hi = wilson_interval(k, n)
        out[plural] = k
        out[f"{name}_rate"] = k / n if n else None
        out[f"{name}_rate_ci95"] = [lo, hi]
    out["net_win_rate"] = (out["wins"] - out["losses"]) / n if n else None
    return out


def compare(a: str, b: str, judge, output_dir: str, *, max_pairs: int | None = None, tie_margin: float = 0.0,
            batch_size: int = 8) -> dict:
    """Judge run A's generations against run B's; ``judge`` is a spec string or a judge object."""
    path_a, rows_a = load_generations(a)
    path_b, rows_b = load_generations(b)
    pairs, only_a, only_b = pair_rows(rows_a, rows_b)
    if not pairs:
        raise LolkitError(f"{path_a} and {path_b} share no (prompt id, sample) pair: were they evaluated on the same data?")
    if max_pairs:
        pairs = pairs[:max_pairs]
    j = make_judge(judge, tie_margin, batch_size) if isinstance(judge, str) else judge
    verdicts = j.judge([ra["prompt"] for ra, _ in pairs], [ra["response"] for ra, _ in pairs],
                       [rb["response"] for _, rb in pairs])
    rows = [{"id": ra.get("id"), "sample": ra.get("sample", 0), "prompt": ra["prompt"], "response_a": ra["response"],
             "response_b": rb["response"], **v} for (ra, rb), v in zip(pairs, verdicts, strict=True)]
    result = {"a": str(path_a), "b": str(path_b), "judge": getattr(j, "name", type(j).__name__),
              "unpaired_a": only_a, "unpaired_b": only_b, **outcome_stats([r["outcome"] for r in rows]),
              "interval": "Wilson score, 95 %"}
    if rows and "consistent" in rows[0]:
        result["position_consistency"] = sum(r["consistent"] for r in rows) / len(rows)
    out = Path(output_dir)
    write_jsonl(out / "pairs.jsonl", rows)
    write_json(out / "comparison.json", result)
    return result
