"""Pairwise comparison: pairing, win/tie/loss with Wilson intervals, reward and LLM judges."""

import json

import pytest

from lolkit.compare import LLMJudge, compare, outcome_stats, pair_rows
from lolkit.errors import LolkitError
from lolkit.metrics import wilson_interval
from tests.conftest import read_jsonl, write_jsonl


def test_wilson_interval_golden():
    # k = 6, n = 10, z = 1.959964: z²/n = 0.384146; centre = (0.6 + 0.192073) / 1.384146 = 0.572246;
    # half = 1.959964 / 1.384146 · √(0.6·0.4/10 + z²/400) = 1.416009 · 0.183313 = 0.259573
    lo, hi = wilson_interval(6, 10)
    assert lo == pytest.approx(0.312673, abs=1e-5) and hi == pytest.approx(0.831819, abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 5)  # no successes: the interval still has width, from 0
    assert lo == 0.0 and hi == pytest.approx(0.434482, abs=1e-5)


def _gens(path, rows):
    path.mkdir(parents=True)
    return write_jsonl(path / "generations.jsonl", rows)


class StubJudge:
    name = "stub"

    def judge(self, prompts, a, b):
        # A wins when its response is longer, loses when shorter, ties otherwise
        return [{"outcome": "win" if len(x) > len(y) else "loss" if len(x) < len(y) else "tie"} for x, y in zip(a, b, strict=True)]


def test_compare_with_a_stub_judge(tmp_path):
    a = [{"id": f"p{i}", "sample": s, "prompt": f"q{i}", "response": "x" * (i + s + 1)} for i in range(5) for s in range(2)]
    # B: same prompts; its responses have length 3 → A (lengths 1..6) wins 5, ties 2, loses 3
    b = [{"id": f"p{i}", "sample": s, "prompt": f"q{i}", "response": "yyy"} for i in range(5) for s in range(2)]
    b.append({"id": "extra", "sample": 0, "prompt": "z", "response": "z"})
    pairs, only_a, only_b = pair_rows(a, b)
    assert len(pairs) == 10 and (only_a, only_b) == (0, 1)
    res = compare(str(_gens(tmp_path / "A", a).parent), str(_gens(tmp_path / "B", b).parent), StubJudge(),
                  str(tmp_path / "out"))
    lengths = [i + s + 1 for i in range(5) for s in range(2)]
    assert (res["wins"], res["ties"], res["losses"]) == (sum(n > 3 for n in lengths), sum(n == 3 for n in lengths),
                                                         sum(n < 3 for n in lengths)) == (5, 2, 3)
    assert res["win_rate"] == 0.5 and res["tie_rate"] == 0.2 and res["loss_rate"] == 0.3
    assert res["win_rate_ci95"] == list(wilson_interval(5, 10)) and res["net_win_rate"] == pytest.approx(0.2)
    assert res["unpaired_b"] == 1 and res["judge"] == "stub"
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["pairs"] == 10
    rows = read_jsonl(tmp_path / "out" / "pairs.jsonl")
    assert rows[0] == {"id": "p0", "sample": 0, "prompt": "q0", "response_a": "x", "response_b": "yyy", "outcome": "loss"}
    assert outcome_stats([])["win_rate"] is None


def test_compare_with_a_reward_judge(tmp_path, cli):
    good = ["a tomato is red.", "a banana is yellow.", "a cherry is red."]
    prompts = ["What colour is a tomato?", "What colour is a banana?", "What colour is a cherry?"]
    a = [{"id": str(i), "prompt": p, "response": r} for i, (p, r) in enumerate(zip(prompts, good, strict=True))]
    b = [{"id": "0", "prompt": prompts[0], "response": "i do not know."},
         {"id": "1", "prompt": prompts[1], "response": "a banana is yellow."},
         {"id": "2", "prompt": prompts[2], "response": "a cherry is blue."}]
    res = cli("compare", _gens(tmp_path / "A", a).parent, _gens(tmp_path / "B", b).parent, "--judge", "reward:colours",
              "--output-dir", tmp_path / "out")
    assert res.code == 0, res
    out = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert (out["wins"], out["ties"], out["losses"]) == (2, 1, 0) and out["judge"] == "reward:colours"
    rows = read_jsonl(tmp_path / "out" / "pairs.jsonl")
    assert rows[1]["score_a"] == rows[1]["score_b"] == 1.0
    bad = cli("compare", tmp_path / "A", tmp_path / "B", "--judge", "magic", "--output-dir", tmp_path / "o2")
    assert bad.code == 2 and "reward:SPEC" in bad.err
    with pytest.raises(LolkitError, match="share no"):
        compare(str(tmp_path / "A"), str(_gens(tmp_path / "C", [{"id": "9", "prompt": "p", "response": "r"}]).parent),
                StubJudge(), str(tmp_path / "o3"))


def test_llm_judge_cancels_position_bias(tiny_model, monkeypatch):
    judge = LLMJudge(tiny_model, batch_size=4)
    # after a chat template's assistant header the answer is "A"; after plain text "...\nAnswer:" it is " A"
    assert judge.answers == (("A", "B") if judge.tokenizer.chat_template else (" A", " B"))
    real = judge.judge(["p1", "p2"], ["a red tomato", "x"], ["a blue tomato", "y"])
    assert all(r["outcome"] in ("win", "tie", "loss") and 0 < r["p_a_better"] < 1 for r in real)
    # the margins are differences of teacher-forced answer log-probs, in both orders
    lp = judge.answer_logprobs([judge.context("p1", "a red tomato", "a blue tomato"),
                                judge.context("p1", "a blue tomato", "a red tomato")])
    assert real[0]["margin_a_first"] == pytest.approx(lp[0][0] - lp[0][1], abs=1e-5)
    assert real[0]["margin_a_second"] == pytest.approx(lp[1][1] - lp[1][0], abs=1e-5)

    # a judge that always prefers whatever is shown first: every pair is a tie (inconsistent)
    monkeypatch.setattr(judge, "answer_logprobs", lambda ctx: [(-0.1, -2.0)] * len(ctx))
    assert [r["outcome"] for r in judge.judge(["p"] * 3, ["a", "b", "c"], ["d", "e", "f"])] == ["tie"] * 3
    # prefers the response "good" wherever it is shown: A wins when it holds it, loses otherwise
    def by_content(ctx):
        return [(-0.1, -2.0) if "### Response A:\ngood" in c else (-2.0, -0.1) for c in ctx]

    monkeypatch.setattr(judge, "answer_logprobs", by_content)
    res = judge.judge(["p", "p"], ["good", "bad"], ["bad", "good"])
    assert [r["outcome"] for r in res] == ["win", "loss"] and res[0]["consistent"]
