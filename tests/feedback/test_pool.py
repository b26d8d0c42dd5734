"""The data pool (bins, flush, balanced rejection sampling) and the feedback providers' parsing."""

import random
from collections import Counter

import pytest

from lolkit.conditions import best_feedback
from lolkit.errors import LolkitError
from lolkit.feedback import pool as P
from lolkit.feedback.providers import FileProvider, RuleProvider, category_of, parse_critique, rule_text

from ..conftest import write_jsonl


def entry(prompt, score, finished=True, category=None, sample=0):
    return P.Entry(1, prompt, sample, f"r{sample}", [1, 2], finished, score, score, category=category)


def test_quantile_bins_golden_and_sizes():
    assert P.quantile_bins([0.2, 0.9, 0.5, 0.9], 2) == [1, 0, 1, 0]
    bins = P.quantile_bins([float(i) for i in range(10)], 5)
    assert bins == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    assert Counter(P.quantile_bins([0.0] * 7, 3)) == {0: 3, 1: 2, 2: 2}  # ties: by order, sizes as array_split


def test_per_prompt_and_global_binning():
    pool = [entry(0, s, sample=k) for k, s in enumerate([0.1, 0.2, 0.3, 0.4])]
    pool += [entry(1, s, sample=k) for k, s in enumerate([0.5, 0.6, 0.7, 0.8])]
    P.assign_bins(pool, 2, "per_prompt")
    assert [e.bin for e in pool] == [1, 1, 0, 0, 1, 1, 0, 0]
    P.assign_bins(pool, 2, "global")
    assert [e.bin for e in pool] == [1, 1, 1, 1, 0, 0, 0, 0]
    cat = [entry(0, 0.0, category=c) for c in (2, 0, 1)]
    P.assign_bins(cat, 3, "per_prompt", by_category=True)
    assert [e.bin for e in cat] == [2, 0, 1]


def test_flush_keeps_the_newest():
    pool = [entry(0, float(k), sample=k) for k in range(10)]
    assert P.flush(pool, 0, 4) == pool
    assert [e.sample for e in P.flush(pool, 1.5, 4)] == [4, 5, 6, 7, 8, 9]
    assert [e.sample for e in P.flush(pool, 0.5, 4)] == [6, 7, 8, 9]  # at least one iteration's worth


def test_select_balanced_golden():
    pool = [entry(0, 0.0, sample=k) for k in range(9)]
    for e, b in zip(pool, [0, 0, 0, 1, 1, 2, 2, 2, 2], strict=True):
        e.bin = b
    picked = P.select_balanced(pool, None, random.Random(0))
    assert Counter(pool[i].bin for i in picked) == {0: 2, 1: 2, 2: 2}
    picked = P.select_balanced(pool, 1, random.Random(0))
    assert Counter(pool[i].bin for i in picked) == {0: 1, 1: 1, 2: 1}
    # untruncated first: bin 0 has one truncated entry among three; a quota of 2 takes the finished two
    pool[0].finished = False
    for seed in range(20):
        picked = P.select_balanced(pool, None, random.Random(seed))
        assert 0 not in picked


def test_pool_quotas_are_balanced_statistics():
    """Random pools (uneven bins per prompt, global quantiles, categories): for every prompt, every bin it
    holds contributes exactly the same count, equal to its smallest bin (or the quota); truncated
    responses are only taken when a bin lacks finished ones; a different seed changes the draw."""
    rng = random.Random(7)
    for trial in range(50):
        pool = [entry(p, rng.random(), finished=rng.random() > 0.3, category=rng.randrange(3), sample=k)
                for p in range(6) for k in range(rng.randint(3, 12))]
        mode = trial % 3
        if mode == 2:
            P.assign_bins(pool, 3, "per_prompt", by_category=True)
        else:
            P.assign_bins(pool, 5, "global" if mode else "per_prompt")
        quota = None if trial % 2 else 2
        picked = P.select_balanced(pool, quota, random.Random(trial))
        assert len(set(picked)) == len(picked)
        for p in range(6):
            have = Counter(e.bin for e in pool if e.prompt_index == p)
            got = Counter(pool[i].bin for i in picked if pool[i].prompt_index == p)
            q = min(have.values()) if quota is None else min(min(have.values()), quota)
            assert set(got) == set(have) and set(got.values()) == {q}, (trial, p, have, got)
            for b in have:
                finished = sum(e.finished for e in pool if e.prompt_index == p and e.bin == b)
                taken_trunc = sum(not pool[i].finished for i in picked if pool[i].prompt_index == p and pool[i].bin == b)
                assert taken_trunc == max(0, q - finished)
    counts = P.bin_counts(pool, picked, 5)
    assert sum(counts["pool_bins"]) == len(pool) and sum(counts["train_bins"]) == len(picked)


def test_best_feedback_and_rule_provider():
    pool = [entry(0, 0.3), entry(0, 0.9), entry(1, 0.9)]
    pool[1].feedback, pool[2].feedback = "first best", "second best"
    assert best_feedback(pool) == "first best"
    assert rule_text({"correct": 0.6, "object": 0.0, "form": 0.2}, 0.8) == "good correct, form; missing object."
    assert rule_text({"increasing": 0.3}, 0.3) == "the answer scores 0.30."
    assert [category_of(v, 0.0, 1.0, 3) for v in (1.0, 0.4, 0.2, 0.0)] == [0, 1, 2, 2]
    fb = RuleProvider("lmc", ["good", "fair", "bad"], 1.0)(["p"] * 3, ["a", "b", "c"], [1.0, 0.4, 0.0], [{}] * 3)
    assert [(f.text, f.category) for f in fb] == [("good", 0), ("fair", 1), ("bad", 2)]


def test_parse_critique():
    fb = parse_critique("Feedback: names the wrong colour. Score: 3", "lmu", [])
    assert (fb.text, fb.score, fb.parsed) == ("names the wrong colour.", 3.0, True)
    assert parse_critique("I'd give it 7 out of 10.", "lmu", []).score == 7.0
    bad = parse_critique("???", "lmu", [])
    assert (bad.score, bad.parsed) == (5.5, False)
    cats = ["good", "fair", "bad"]
    assert parse_critique("Bad. It names no colour; not good.", "lmc", cats).category == 2  # the first named
    miss = parse_critique("hmm", "lmc", cats)
    assert (miss.category, miss.parsed) == (1, False)


def test_file_provider_errors_name_file_line_field(tmp_path):
    path = write_jsonl(tmp_path / "fb.jsonl", [{"prompt": "p", "response": "r", "feedback": "ok", "score": 4},
                                               {"prompt": "p", "response": "s", "feedback": "ok", "score": "high"}])
    with pytest.raises(LolkitError, match=r"fb.jsonl:2: field 'score'"):
        FileProvider("lmu", [], str(path))
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p", "response": "r", "feedback": "", "category": "great"}])
    with pytest.raises(LolkitError, match=r"c.jsonl:1: field 'category'"):
        FileProvider("lmc", ["good", "bad"], str(path))
    path = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "p", "response": "r", "feedback": "fine", "score": 4}])
    prov = FileProvider("lmu", [], str(path))
    assert prov(["p"], ["r"], [None], [{}])[0].score == 4.0
    with pytest.raises(LolkitError, match="no human feedback for 1 of 2 samples"):
        prov(["p", "p"], ["r", "x"], [None, None], [{}, {}])
