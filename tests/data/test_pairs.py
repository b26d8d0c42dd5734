"""`lolkit preprocess pairs`: scored samples → preference pairs / rankings (issue 18, item 5), and the
documented chain generate → reward → pairs → train --algo dpo | pro."""

from __future__ import annotations

import json

from lolkit.data.pairs import PairStats, preference_pairs, rankings
from lolkit.data.schema import load_records

from ..conftest import read_jsonl, write_jsonl


def _scored(tmp_path, rows):
    return load_records(write_jsonl(tmp_path / "scored.jsonl", rows))


# prompt A: four answers, one duplicated, two tied at 0.5; prompt B: a single answer; prompt C: two ties
ROWS = [
    {"id": "a-0", "prompt": "A?", "response": "best", "reward": 0.9, "meta": {"source_id": "A"}},
    {"id": "a-1", "prompt": "A?", "response": "mid one", "reward": 0.5, "meta": {"source_id": "A"}},
    {"id": "a-2", "prompt": "A?", "response": "mid two", "reward": 0.5, "meta": {"source_id": "A"}},
    {"id": "a-3", "prompt": "A?", "response": "worst", "reward": 0.1, "meta": {"source_id": "A"}},
    {"id": "a-4", "prompt": "A?", "response": "best", "reward": 0.2, "meta": {"source_id": "A"}},  # duplicate text
    {"id": "b-0", "prompt": "B?", "response": "alone", "reward": 0.3, "meta": {"source_id": "B"}},
    {"id": "c-0", "prompt": "C?", "response": "x", "reward": 0.4, "meta": {"source_id": "C"}},
    {"id": "c-1", "prompt": "C?", "response": "y", "reward": 0.4, "meta": {"source_id": "C"}},
]


def test_best_worst_all_pairs_margin_and_ties(tmp_path):
    recs = _scored(tmp_path, ROWS)
    st = PairStats()
    bw = preference_pairs(recs, "best_worst", stats=st)
    assert [(p["id"], p["chosen"], p["rejected"], p["chosen_reward"], p["rejected_reward"]) for p in bw] == [
        ("A-pair-0", "best", "worst", 0.9, 0.1)]
    assert st.to_json() == {"prompts": 3, "answers": 8, "dropped": {"duplicate_answers": 1, "prompts_with_one_answer": 1,
                                                                    "tied_pairs": 1}}
    assert bw[0]["meta"] == {"source_ids": ["a-0", "a-3"]}
    st = PairStats()
    every = preference_pairs(recs, "all", stats=st)
    # A: 4 distinct answers → 6 pairs, one of them tied (mid one / mid two); C: its only pair is tied
    assert [(p["chosen"], p["rejected"]) for p in every] == [
        ("best", "mid one"), ("best", "mid two"), ("best", "worst"), ("mid one", "worst"), ("mid two", "worst")]
    assert st.dropped["tied_pairs"] == 2
    st = PairStats()
    wide = preference_pairs(recs, "all", margin=0.4, stats=st)  # gaps: .4 .4 .8 .4 .4 0 → only .8 stays
    assert [(p["chosen"], p["rejected"]) for p in wide] == [("best", "worst")]
    assert st.dropped["pairs_within_margin"] == 4
    kept = preference_pairs(recs, "all", keep_ties=True)
    assert ("mid one", "mid two") in [(p["chosen"], p["rejected"]) for p in kept] and len(kept) == 7


def test_rankings_top_k_and_ties(tmp_path):
    recs = _scored(tmp_path, ROWS)
    st = PairStats()
    ranks = rankings(recs, stats=st)
    assert [(r["id"], r["responses"], r["rewards"]) for r in ranks] == [("A-rank", ["best", "mid one", "worst"], [0.9, 0.5, 0.1])]
    assert st.dropped == {"duplicate_answers": 1, "tied_answers": 2, "prompts_with_one_answer": 2}
    st = PairStats()
    top = rankings(recs, size=2, keep_ties=True, stats=st)
    assert [(r["responses"], r["rewards"]) for r in top] == [(["best", "mid one"], [0.9, 0.5]), (["x", "y"], [0.4, 0.4])]
    assert st.dropped["prompts_with_fewer_than_top_k"] == 1


def test_cli_reports_what_it_dropped_and_refuses_unscored_or_paired_input(tmp_path, cli):
    src = write_jsonl(tmp_path / "scored.jsonl", ROWS)
    out = tmp_path / "pairs.parquet"
    r = cli("preprocess", "pairs", src, "--output", out, "--mode", "all")
    assert r.code == 0, r
    assert r.out.strip() == ("wrote " + str(out) + ": 5 preference records from 3 prompts (8 scored answers; dropped "
                             "duplicate answers 1, prompts with one answer 1, tied pairs 2)")
    assert [x.chosen_reward if hasattr(x, "chosen_reward") else x.rewards for x in load_records(out)][0] == [0.9, 0.5]
    unscored = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    r = cli("preprocess", "pairs", unscored, "--output", tmp_path / "o.jsonl")
    assert r.code == 2 and "u.jsonl:1: field 'reward': missing reward" in r.err and "lolkit reward" in r.err
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    r = cli("preprocess", "pairs", pairs, "--output", tmp_path / "o.jsonl")
    assert r.code == 2 and "holds preference records" in r.err
    r = cli("preprocess", "pairs", src, "--output", tmp_path / "o.jsonl", "--keep-ties", "--margin", "0.1")
    assert r.code == 2 and "--keep-ties" in r.err
    single = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "response": "a", "reward": 1}])
    r = cli("preprocess", "pairs", single, "--output", tmp_path / "o.jsonl")
    assert r.code == 2 and "no preference records to write (prompts with one answer 1)" in r.err
    assert not (tmp_path / "o.jsonl").exists()


def test_generate_reward_pairs_then_dpo_and_pro_and_every_output_loads_in_datasets(tmp_path, cli, tiny_model):
    """The README's chain on the tiny model; every file written on the way loads with datasets.load_dataset."""
    import datasets

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"What colour is a {o}?"}
                                                       for i, o in enumerate(["lime", "lemon", "plum", "cherry", "coal", "snow"])])
    # the tiny random model's answers all score 0 on the colours task: score their variety instead
    (tmp_path / "reward.yaml").write_text("components:\n  variety: {type: distinct, n: 1}\n  words: {type: length, "
                                          "max_length: 12, weight: 0.5}\n", encoding="utf-8")
    steps = [
        ("generate", "--model", "tiny", "--data", prompts, "--output", tmp_path / "samples.jsonl", "--num-samples", "4",
         "--max-new-tokens", "12", "--quiet"),
        ("reward", "--input", tmp_path / "samples.jsonl", "--reward", tmp_path / "reward.yaml", "--output",
         tmp_path / "scored.jsonl", "--quiet"),
        ("preprocess", "pairs", tmp_path / "scored.jsonl", "--output", tmp_path / "pairs.jsonl"),
        ("preprocess", "pairs", tmp_path / "scored.jsonl", "--output", tmp_path / "ranks.parquet", "--kind", "ranking",
         "--top-k", "2"),
        ("train", "--algo", "dpo", "--data", tmp_path / "pairs.jsonl", "--val-data", prompts, "--reward", tmp_path / "reward.yaml", "--output-dir",
         tmp_path / "dpo", "--max-steps", "2", "--batch-size", "2", "--quiet"),
        ("train", "--algo", "pro", "--data", tmp_path / "ranks.parquet", "--val-data", prompts, "--reward", tmp_path / "reward.yaml", "--output-dir",
         tmp_path / "pro", "--max-steps", "2", "--batch-size", "2", "--quiet"),
        ("eval", "--model", tmp_path / "dpo", "--data", prompts, "--reward", "colours", "--metrics", "none", "--quiet"),
    ]
    for args in steps:
        r = cli(*args)
        assert r.code == 0, (args[:2], r)
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    ranks = datasets.load_dataset("parquet", data_files=str(tmp_path / "ranks.parquet"), split="train",
                                  cache_dir=str(tmp_path / "c"))
    assert all(len(r) == 2 and r[0] > r[1] for r in ranks["rewards"])
    for name in ("samples.jsonl", "scored.jsonl", "pairs.jsonl", "dpo/metrics.jsonl", "dpo/eval/generations.jsonl"):
        n = len(read_jsonl(tmp_path / name))
        ds = datasets.load_dataset("json", data_files=str(tmp_path / name), split="train", cache_dir=str(tmp_path / "c"))
        assert ds.num_rows == n > 0, name
    assert json.loads((tmp_path / "pro" / "run.json").read_text())["data"] == str(tmp_path / "ranks.parquet")
