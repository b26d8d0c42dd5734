"""`lolkit preprocess <recipe>` on fixtures in each corpus's published raw format (tests/assets/recipes).

For each recipe: the committed fixture gives exact records / splits / counts; a fresh fixture written
here in the same format also works; malformed input exits 2 naming file, line (or JSON path) and
field, and leaves no output directory behind.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from lolkit.data.recipes import RECIPES
from lolkit.data.schema import load_records

from ..conftest import read_jsonl, run_cli

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "recipes"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.\n")


def _run(*args) -> None:
    r = run_cli("preprocess", *map(str, args))
    assert r.code == 0, r


def _splits(out: Path) -> dict[str, list[dict]]:
    return {p.stem: read_jsonl(p) for p in sorted(out.glob("*.jsonl"))}


def _stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def _all_valid(out: Path) -> None:
    """Every split file passes the data contract's own validation and loads with datasets.load_dataset."""
    import datasets

    for p in out.glob("*.jsonl"):
        n = len(load_records(p))
        ds = datasets.load_dataset("json", data_files=str(p), split="train", cache_dir=str(out.parent / ".hf-cache"))
        assert ds.num_rows == n, p


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _jl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_lists_every_recipe_and_the_cli_has_a_command_for_each():
    assert set(RECIPES) == {"hh", "reddit", "wow", "faithdial", "faithdial_wow", "comet", "tldr", "imdb",
                            "ultrafeedback", "jsonl"}
    r = run_cli("preprocess", "--help")
    assert r.code == 0
    for name in RECIPES:
        assert name in r.out
        assert callable(RECIPES[name].load())


# ----------------------------------------------------------------------------------------------- hh


def test_hh_fixture_ranking(tmp_path):
    out = tmp_path / "hh"
    _run("hh", ASSETS / "hh", "-o", out)
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"train": 2, "val": 1, "test": 2}
    first = s["train"][0]
    assert first["prompt"] == SYSTEM + "### Human: How do I keep basil fresh? ### Assistant:"
    assert first["responses"] == ["Trim the stems and keep it in a glass of water on the counter.", "Put it in the freezer."]
    assert first["rewards"] == pytest.approx([_sigmoid(1.25), _sigmoid(-0.5)])
    assert s["train"][1]["prompt"].endswith("### Human: What is a good name for a cat? ### Assistant: Do you want "
                                            "something classic or funny? ### Human: Funny, please. ### Assistant:")
    assert [r["meta"]["subset"] for r in s["test"]] == ["harmless_base", "helpful_base"]
    st = _stats(out)
    assert st["read"] == {"train": 4, "val": 2, "test": 2}
    assert st["dropped"] == {"train_response_ends_with_colon": 2, "empty_response": 1}
    _all_valid(out)


def test_hh_preference_response_and_formats(tmp_path):
    _run("hh", ASSETS / "hh", "-o", tmp_path / "p", "--kind", "preference", "--reward-transform", "raw",
         "--format", "hh", "--no-clean")
    train = read_jsonl(tmp_path / "p" / "train.jsonl")
    assert len(train) == 4  # no cleaning
    assert train[0] == {"id": "train-1", "prompt": "\n\nHuman: How do I keep basil fresh?\n\nAssistant:",
                        "chosen": "Trim the stems and keep it in a glass of water on the counter.",
                        "rejected": "Put it in the freezer.", "chosen_reward": 1.25, "rejected_reward": -0.5,
                        "meta": train[0]["meta"]}
    _run("hh", ASSETS / "hh", "-o", tmp_path / "r", "--kind", "response", "--format", "messages")
    r = read_jsonl(tmp_path / "r" / "train.jsonl")[1]
    assert r["prompt"] == [{"role": "user", "content": "What is a good name for a cat?"},
                           {"role": "assistant", "content": "Do you want something classic or funny?"},
                           {"role": "user", "content": "Funny, please."}]
    assert r["response"] == "How about Sir Pounce-a-lot?" and r["reward"] == pytest.approx(_sigmoid(0.75))
    _all_valid(tmp_path / "r")


def _pro_row(turns, suffix, reward):
    return {"prefix": [turns + ["<|assistant|>"]] * len(suffix), "suffix": suffix, "reward": reward, "sft_index": 0}


def test_hh_fresh_fixture(tmp_path):
    root = tmp_path / "data"
    _jl(root / "hh_train_len2" / "train.json", [
        _pro_row(["<|prompter|>Hi there"], ["Hello! How can I help?", "What?"], [2.0, -2.0]),
        _pro_row(["<|prompter|>A", "<|assistant|>B", "<|prompter|>C"], ["D", "E", "F"], [0.3, 0.2, 0.1]),
        _pro_row(["<|prompter|>Cut"], ["Sure:", "No."], [0.0, 0.0]),
    ])
    _run("hh", root, "-o", tmp_path / "out", "--kind", "preference")
    s = _splits(tmp_path / "out")
    assert list(s) == ["train"] and [r["chosen"] for r in s["train"]] == ["Hello! How can I help?", "D"]
    assert s["train"][1]["rejected"] == "F"


# ------------------------------------------------------------------------------------------- reddit


def test_reddit_fixture(tmp_path):
    out = tmp_path / "reddit"
    _run("reddit", ASSETS / "reddit", "-o", out, "--test-size", "1", "--val-size", "1")
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"neg_train": 1, "pos_train": 1, "test": 2, "val": 2}
    every = [r for rows in s.values() for r in rows]
    assert sorted(r["id"] for r in every) == ["neg-e4n3y2a", "neg-e4n3y2c", "neg-e4n3y2d", "pos-d3m2x1a",
                                              "pos-d3m2x1b", "pos-d3m2x1e"]
    by_id = {r["id"]: r for r in every}
    assert by_id["pos-d3m2x1b"]["prompt"] == "Does anyone know where this quote comes from?"  # newline squashed
    assert by_id["pos-d3m2x1b"]["response"] == "Here is the source: <URL> worth a read"
    assert by_id["neg-e4n3y2c"]["response"] == "Read a book for once: <URL>"
    assert by_id["neg-e4n3y2a"]["meta"]["score"] == -25.0 and "reward" not in by_id["neg-e4n3y2a"]
    assert {r["meta"]["polarity"] for r in s["test"]} == {"pos", "neg"}
    st = _stats(out)
    assert st["read"] == {"pos": 5, "neg": 4}
    assert st["dropped"] == {"pos_missing_text": 1, "neg_missing_text": 1, "pos_over_100_words": 1}
    assert st["changed"] == {"pos_urls_masked": 1, "neg_urls_masked": 1}
    # a fixed seed gives the same split; another seed a different order
    _run("reddit", ASSETS / "reddit", "-o", tmp_path / "again", "--test-size", "1", "--val-size", "1")
    assert _splits(tmp_path / "again") == s
    _all_valid(out)


def _reddit_csv(path: Path, rows: list[list[str]]) -> None:
    header = ["id", "parent_id", "subreddit_id", "link_id", "text", "score", "ups", "author", "controversiality",
              "parent_link_id", "parent_text", "parent_score", "parent_ups", "parent_author", "parent_controversiality"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, (text, score, parent) in enumerate(rows):
            w.writerow([f"c{i}", "t1_x", "t5_y", "t3_z", text, score, score, "u", "0", "t3_z", parent, "1", "1", "v", "0"])


def test_reddit_fresh_fixture_sampling(tmp_path):
    _reddit_csv(tmp_path / "up.csv", [[f"good reply {i}", str(50 + i), f"question {i}"] for i in range(10)])
    _reddit_csv(tmp_path / "down.csv", [[f"bad reply {i}", str(-5 - i), f"post {i}"] for i in range(6)] + [["nan", "-3", "x"]])
    args = ["-o", tmp_path / "o", "--positive", tmp_path / "up.csv", "--negative", tmp_path / "down.csv",
            "--sample-size", "8", "--test-size", "2", "--val-size", "1", "--seed", "3"]
    _run("reddit", *args)
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"neg_train": 3, "pos_train": 5, "test": 4, "val": 2}
    st = _stats(tmp_path / "o")
    assert st["dropped"] == {"pos_not_sampled": 2, "neg_missing_text": 1}


# -------------------------------------------------------------------------------- wow / faithdial


def test_wow_fixture(tmp_path):
    out = tmp_path / "wow"
    _run("wow", ASSETS / "wow", "-o", out, "--faithdial-dir", ASSETS / "faithdial")
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"faithdial_test": 1, "test": 1, "train": 3, "val": 1}
    r = s["train"][0]
    assert r["prompt"] == ("Knowledge: The lemon is native to Asia, primarily Northeast India.<|endoftext|>"
                           "Hi! Do you like lemons? They grow on small evergreen trees.<|endoftext|>"
                           "I do, I put them in my tea. Where do they come from?<|endoftext|>")
    assert r["response"] == "They are native to Asia, probably northeast India."
    assert r["meta"]["knowledge"] == "The lemon is native to Asia, primarily Northeast India."
    assert r["meta"]["reference"] == r["response"]
    # the wizard turn without a checked sentence is skipped and left out of later histories
    assert s["train"][1]["meta"]["history"][-2:] == ["Interesting! Are they used for anything else?", "Like what?"]
    # the no_passages_used turn stays in the history
    assert s["train"][2]["meta"]["history"] == ["I play trumpet in a jazz band.", "That's cool! I don't know much about that.",
                                                "It started in New Orleans, I think."]
    assert _stats(out)["dropped"] == {"train_no_passages_used": 1, "train_wizard_opens_dialogue": 1,
                                      "train_wizard_without_checked_sentence": 1}
    _all_valid(out)


def test_wow_history_trimming(tmp_path):
    _run("wow", ASSETS / "wow", "-o", tmp_path / "t", "--max-history-turns", "2", "--sep", " | ")
    r = read_jsonl(tmp_path / "t" / "train.jsonl")[1]
    assert r["meta"]["history"] == ["Interesting! Are they used for anything else?", "Like what?"]
    assert r["prompt"].startswith("Knowledge: The juice") and r["prompt"].endswith(" | Like what? | ")
    _run("wow", ASSETS / "wow", "-o", tmp_path / "w", "--max-history-words", "12")
    hist = read_jsonl(tmp_path / "w" / "train.jsonl")[1]["meta"]["history"]
    assert hist == ["Interesting! Are they used for anything else?", "Like what?"]  # 7 + 2 words fit, +8 would not
    assert _stats(tmp_path / "w")["changed"]["train_history_trimmed"] >= 1


def test_faithdial_and_faithdial_wow_fixture(tmp_path):
    _run("faithdial", ASSETS / "faithdial", "-o", tmp_path / "fd")
    s = _splits(tmp_path / "fd")
    assert {k: len(v) for k, v in s.items()} == {"test": 1, "train": 2, "val": 1}
    r = s["train"][0]
    assert r["prompt"] == ("Knowledge: Internet access was once rare, but has grown rapidly.<|endoftext|>"
                           "Can you imagine the world without internet access?<|endoftext|>")
    assert r["meta"]["BEGIN"] == ["Hallucination"] and r["meta"]["original_response"].startswith("No I could not!")
    assert _stats(tmp_path / "fd")["dropped"] == {"faithdial_train_empty_text": 1}
    _run("faithdial_wow", "--wow-dir", ASSETS / "wow", "--faithdial-dir", ASSETS / "faithdial", "-o", tmp_path / "fw")
    s2 = _splits(tmp_path / "fw")
    assert {k: len(v) for k, v in s2.items()} == {"test": 1, "train": 5, "val": 2}
    assert sorted(r["meta"]["source"] for r in s2["train"]) == ["faithdial"] * 2 + ["wow"] * 3
    assert s2["test"] == s["test"]
    _all_valid(tmp_path / "fw")


def test_faithdial_fresh_fixture_flattened_rows(tmp_path):
    root = tmp_path / "fd"
    rows = [{"dialog_idx": i, "history": [f"question {i}?"], "knowledge": f"fact {i}.", "response": f"answer {i}.",
             "original_response": None, "BEGIN": ["Entailment"], "VRM": ["Disclosure"]} for i in range(3)]
    for name in ("train.json", "valid.json", "test.json"):
        _jl(root / name, rows)  # the Hugging Face export: one utterance per line
    _run("faithdial", root, "-o", tmp_path / "o")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"test": 3, "train": 3, "val": 3}
    assert s["val"][2]["prompt"] == "Knowledge: fact 2.<|endoftext|>question 2?<|endoftext|>"


def test_wow_fresh_fixture(tmp_path):
    root = tmp_path / "wow"
    root.mkdir()
    dialog = {"chosen_topic": "Owls", "dialog": [
        {"speaker": "1_Apprentice", "text": "Owls are cool."},
        {"speaker": "0_Wizard", "text": "They hunt at night.", "checked_sentence": {"chosen_Owl_0": "Owls are mostly nocturnal."}},
    ]}
    (root / "train.json").write_text(json.dumps([dialog, dialog]))
    _run("wow", root, "-o", tmp_path / "o")
    s = _splits(tmp_path / "o")
    assert list(s) == ["train"] and [r["id"] for r in s["train"]] == ["wow-train-0-1", "wow-train-1-1"]


def test_faithdial_wow_fresh_fixture(tmp_path):
    wow = tmp_path / "wow"
    wow.mkdir()
    dialog = {"dialog": [{"speaker": "1_Apprentice", "text": "Tell me about tides."},
                         {"speaker": "0_Wizard", "text": "The moon pulls the oceans.",
                          "checked_sentence": {"chosen_Tide_0": "Tides are caused by the Moon's gravity."}}]}
    for name in ("train.json", "valid_topic_split.json"):
        (wow / name).write_text(json.dumps([dialog] * 3))
    fd = tmp_path / "fd"
    for name, n in (("train.json", 4), ("valid.json", 1), ("test.json", 2)):
        _jl(fd / name, [{"history": ["hi?"], "knowledge": f"k{i}", "response": f"r{i}"} for i in range(n)])
    _run("faithdial_wow", "--wow-dir", wow, "--faithdial-dir", fd, "-o", tmp_path / "o", "--seed", "5")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"test": 2, "train": 7, "val": 4}
    _run("faithdial_wow", "--wow-dir", wow, "--faithdial-dir", fd, "-o", tmp_path / "o2", "--seed", "5")
    assert _splits(tmp_path / "o2") == s  # same seed, same order


def test_jsonl_recipe_fresh_fixture(tmp_path):
    src = _jl(tmp_path / "trl.jsonl", [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}])
    _run("jsonl", src, "--output", tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl") == [{"id": "line-1", "prompt": "p1", "response": "c1"},
                                                 {"id": "line-2", "prompt": "p2", "response": "c2"}]


# -------------------------------------------------------------------------------------------- comet


def test_comet_fixture(tmp_path):
    out = tmp_path / "comet"
    _run("comet", "-o", out, "--atomic10x", ASSETS / "comet" / "ATOMIC10X.jsonl", "--atomic2020",
         ASSETS / "comet" / "test.tsv")
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"test": 3, "test_atomic10x": 1, "train": 3, "val": 1}
    r = s["train"][0]
    assert r["prompt"] == "<head> PersonX decides to see a therapist </head> <relation> xEffect </relation> [GEN] "
    assert r["response"] == "feels better" and r["reward"] == pytest.approx(0.9934503436088562)
    assert r["meta"]["rec_0.9"] is True
    t = s["test"][0]
    assert t["response"] == "lazy" and t["meta"]["references"] == ["lazy", "unmotivated"] and "reward" not in t
    st = _stats(out)
    assert st["dropped"] == {"atomic10x_empty_head_or_tail": 1, "atomic10x_other_relation": 1,
                             "atomic2020_other_relation": 2}
    _run("comet", "-o", tmp_path / "ng", "--atomic2020", ASSETS / "comet" / "test.tsv", "--no-group-test")
    assert len(read_jsonl(tmp_path / "ng" / "test.jsonl")) == 4
    _all_valid(out)


def test_comet_fresh_fixture(tmp_path):
    rows = [{"head": f"PersonX eats {i} apples", "relation": "xReact", "tail": "full", "split": "train",
             "p_valid_model": i / 10} for i in range(5)]
    _jl(tmp_path / "a.jsonl", rows)
    _run("comet", "-o", tmp_path / "o", "--atomic10x", tmp_path / "a.jsonl", "--min-p-valid", "0.25")
    s = _splits(tmp_path / "o")
    assert [r["reward"] for r in s["train"]] == [0.3, 0.4]


# --------------------------------------------------------------------------------------------- tldr


def test_tldr_fixture(tmp_path):
    out = tmp_path / "tldr"
    _run("tldr", "-o", out, "--comparisons", ASSETS / "tldr" / "comparisons", "--sft-dir", ASSETS / "tldr" / "tldr_3_filtered")
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"sft_train": 1, "sft_val": 1, "test": 1, "train": 1, "val": 1}
    r = s["train"][0]
    assert r["prompt"] == ("SUBREDDIT: r/relationships\nTITLE: My roommate never cleans\nPOST: We share a flat and "
                           "the dishes pile up for weeks. I've asked nicely twice.\nTL;DR:")
    assert r["chosen"] == " roommate leaves dishes for weeks, asked twice, what now?" and r["rejected"] == " I hate dishes"
    assert s["test"][0]["chosen"] == " dog hides under bed for hours whenever I vacuum, how to help?"  # choice 1
    assert s["sft_train"][0]["response"] == " finally baked a sourdough loaf that rose after three failed starters"
    assert _stats(out)["dropped"] == {"comparison_identical_summaries": 1, "comparison_without_post_cnndm": 1,
                                      "sft_train_empty_text": 1}
    _all_valid(out)


def test_tldr_fresh_fixture_val_size(tmp_path):
    rows = [{"info": {"id": f"t3_{i}", "post": f"post {i}", "title": f"title {i}", "subreddit": "sub"},
             "summaries": [{"text": f" good {i}"}, {"text": f" bad {i}"}], "choice": 0, "split": "valid1"}
            for i in range(6)]
    _jl(tmp_path / "batch1.json", rows)
    _run("tldr", "-o", tmp_path / "o", "--comparisons", tmp_path / "batch1.json", "--val-size", "2")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"train": 4, "val": 2}
    assert _stats(tmp_path / "o")["splits"] == {"train": 4, "val": 2, "test": 0}  # an empty split gets no file


# --------------------------------------------------------------------------------------------- imdb


def test_imdb_fixture(tmp_path):
    out = tmp_path / "imdb"
    _run("imdb", ASSETS / "imdb", "-o", out, "--val-fraction", "0.4", "--strip-html")
    s = _splits(out)
    every = [r for rows in s.values() for r in rows]
    assert len(every) == 6 and len(s["test"]) == 2
    r = {x["id"]: x for x in every}["train-neg-2"]
    assert r["prompt"] == "Terrible pacing and a plot that made"
    assert r["response"] == "no sense at all, I walked out halfway."
    assert r["meta"] == {"label": "neg", "rating": 1, "reference": "Terrible pacing and a plot that made no sense at all, "
                         "I walked out halfway.", "source": "train/neg/2_1.txt"}
    assert all("<br" not in x["prompt"] + x["response"] for x in every)
    st = _stats(out)
    assert st["read"] == {"train": 5, "test": 2} and sum(st["dropped"].values()) == 1  # "Awful." is one word
    _all_valid(out)


def test_imdb_fresh_fixture_and_sentiment(tmp_path):
    root = tmp_path / "aclImdb"
    for part in ("train", "test"):
        for label in ("pos", "neg"):
            (root / part / label).mkdir(parents=True)
            for i in range(5):
                (root / part / label / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(f"{label} review number {i} of {part}")
    _run("imdb", tmp_path, "-o", tmp_path / "o", "--sentiment", "pos", "--test-size", "3")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"test": 3, "train": 4, "val": 1}
    assert {r["meta"]["label"] for rows in s.values() for r in rows} == {"pos"}


# ------------------------------------------------------------------------------------ ultrafeedback


def test_ultrafeedback_fixture(tmp_path):
    out = tmp_path / "uf"
    _run("ultrafeedback", ASSETS / "ultrafeedback" / "train_prefs.jsonl", ASSETS / "ultrafeedback" / "test_prefs.jsonl", "-o", out)
    s = _splits(out)
    assert {k: len(v) for k, v in s.items()} == {"test": 1, "train": 2}
    assert s["train"][0] == {"id": "8a1f", "prompt": [{"role": "user", "content": "What is the capital of Australia?"}],
                             "chosen": "The capital of Australia is Canberra.", "rejected": "Sydney.",
                             "chosen_reward": 9.0, "rejected_reward": 3.5, "meta": {"source": "train_prefs.jsonl:1"}}
    assert _stats(out)["dropped"] == {"train_tie": 1}
    _run("ultrafeedback", ASSETS / "ultrafeedback" / "train_prefs.jsonl", "-o", tmp_path / "p", "--plain", "--keep-ties")
    p = read_jsonl(tmp_path / "p" / "train.jsonl")
    assert len(p) == 3 and p[0]["prompt"] == "What is the capital of Australia?"
    _all_valid(out)


def test_ultrafeedback_fresh_fixture(tmp_path):
    def conv(p, a):
        return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}, {"role": "assistant", "content": a}]
    rows = [{"prompt": f"q{i}", "prompt_id": f"id{i}", "chosen": conv(f"q{i}", f"good {i}"), "rejected": conv(f"q{i}", f"bad {i}"),
             "score_chosen": 5 + i, "score_rejected": 1} for i in range(3)]
    _jl(tmp_path / "my_split.jsonl", rows)
    _run("ultrafeedback", tmp_path / "my_split.jsonl", "-o", tmp_path / "o")
    s = _splits(tmp_path / "o")
    assert list(s) == ["my_split"] and s["my_split"][2]["prompt"][0] == {"role": "system", "content": "Be brief."}


# ---------------------------------------------------------------------------------- malformed input


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "raw" / name
    shutil.copytree(ASSETS / name, dst)
    return dst


def _edit_jsonl(path: Path, line: int, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[line - 1])
    change(obj)
    lines[line - 1] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hh_bad_reward(root):
    _edit_jsonl(root / "hh_train_len2" / "train.json", 2, lambda o: o["reward"].__setitem__(1, "high"))
    return ["hh", root], "train.json:2: field 'reward[1]'"


def _hh_bad_marker(root):
    _edit_jsonl(root / "hh_dev" / "sampled_dev.json", 1, lambda o: o["prefix"][0].__setitem__(0, "User: hi"))
    return ["hh", root], "sampled_dev.json:1: field 'prefix[0][0]'"


def _reddit_bad_score(root):
    text = (root / "comments_negative.csv").read_text().replace(",-9,-9,", ",lots,-9,")
    (root / "comments_negative.csv").write_text(text)
    return ["reddit", root], "comments_negative.csv:4: field 'score'"


def _reddit_missing_column(root):
    text = (root / "comments_positive.csv").read_text().replace("parent_text", "parent_body", 1)
    (root / "comments_positive.csv").write_text(text)
    return ["reddit", root], "comments_positive.csv:1: field 'parent_text': missing column"


def _wow_bad_speaker(root):
    data = json.loads((root / "train.json").read_text())
    data[1]["dialog"][2]["speaker"] = "2_Narrator"
    (root / "train.json").write_text(json.dumps(data))
    return ["wow", root], "train.json: field '[1].dialog[2].speaker'"


def _faithdial_bad_history(root):
    data = json.loads((root / "test.json").read_text())
    data[0]["utterances"][0]["history"] = "not a list"
    (root / "test.json").write_text(json.dumps(data))
    return ["faithdial", root], "test.json: field '[0].utterances[0].history'"


def _comet_bad_split(root):
    _edit_jsonl(root / "ATOMIC10X.jsonl", 4, lambda o: o.__setitem__("split", "dev"))
    return ["comet", "--atomic10x", root / "ATOMIC10X.jsonl"], "ATOMIC10X.jsonl:4: field 'split'"


def _comet_bad_tsv(root):
    (root / "test.tsv").write_text("PersonX runs\txEffect\tgets tired\nPersonX sleeps\txEffect\n")
    return ["comet", "--atomic2020", root / "test.tsv"], "test.tsv:2: expected 3 tab-separated fields"


def _tldr_bad_choice(root):
    _edit_jsonl(root / "comparisons" / "batch10.json", 2, lambda o: o.__setitem__("choice", 2))
    return ["tldr", "--comparisons", root / "comparisons"], "batch10.json:2: field 'choice'"


def _tldr_bad_json(root):
    p = root / "tldr_3_filtered" / "valid.jsonl"
    p.write_text(p.read_text() + '{"id": "t3_x", "post": \n')
    return ["tldr", "--sft-dir", root / "tldr_3_filtered"], "valid.jsonl:2: invalid JSON"


def _imdb_bad_name(root):
    (root / "aclImdb" / "train" / "pos" / "review.txt").write_text("no rating in the name")
    return ["imdb", root], "review.txt: file name must be <id>_<rating>.txt"


def _uf_bad_role(root):
    _edit_jsonl(root / "train_prefs.jsonl", 2, lambda o: o["rejected"][1].__setitem__("role", "bot"))
    return ["ultrafeedback", root / "train_prefs.jsonl"], "train_prefs.jsonl:2: field 'rejected[1]'"


def _uf_bad_score(root):
    _edit_jsonl(root / "test_prefs.jsonl", 1, lambda o: o.pop("score_rejected"))
    return ["ultrafeedback", root / "test_prefs.jsonl"], "test_prefs.jsonl:1: field 'score_rejected': missing field"


@pytest.mark.parametrize("name,corrupt", [
    ("hh", _hh_bad_reward), ("hh", _hh_bad_marker), ("reddit", _reddit_bad_score), ("reddit", _reddit_missing_column),
    ("wow", _wow_bad_speaker), ("faithdial", _faithdial_bad_history), ("comet", _comet_bad_split),
    ("comet", _comet_bad_tsv), ("tldr", _tldr_bad_choice), ("tldr", _tldr_bad_json), ("imdb", _imdb_bad_name),
    ("ultrafeedback", _uf_bad_role), ("ultrafeedback", _uf_bad_score),
], ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_malformed_input_exits_2_with_location_and_no_output(tmp_path, name, corrupt):
    args, expected = corrupt(_copy(tmp_path, name))
    out = tmp_path / "out"
    r = run_cli("preprocess", *map(str, args), "-o", str(out))
    assert r.code == 2, r
    assert r.err.startswith("error: ") and expected in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


def test_failed_run_leaves_a_previous_output_untouched(tmp_path):
    out = tmp_path / "out"
    _run("ultrafeedback", ASSETS / "ultrafeedback" / "train_prefs.jsonl", "-o", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    root = _copy(tmp_path, "ultrafeedback")
    args, _ = _uf_bad_role(root)
    assert run_cli("preprocess", *map(str, args), "-o", str(out)).code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_dir_with_foreign_files_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run_cli("preprocess", "ultrafeedback", str(ASSETS / "ultrafeedback" / "train_prefs.jsonl"), "-o", str(out))
    assert r.code == 2 and "holds other files" in r.err
    assert (out / "notes.txt").read_text() == "mine"


def test_missing_input_is_one_line(tmp_path):
    r = run_cli("preprocess", "hh", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"))
    assert r.code == 2 and "nowhere" in r.err and not (tmp_path / "o").exists()


# ------------------------------------------------------- hh: the human choice (issue 16.3) and the raw release

REAL_HH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def _pro_disagreeing(root: Path) -> Path:
    """PRO dev/test rows as published: suffix[0] (sft_index 0) is the human choice; the reward model
    prefers the other reply in row 1, and row 2's other reply is empty."""
    rows = [
        {"prefix": [["<|prompter|>Tell me a joke", "<|assistant|>"]] * 2, "suffix": ["Why did the chicken cross?", "No."],
         "reward": [-0.5, 1.5], "sft_index": 0},
        {"prefix": [["<|prompter|>Say hi", "<|assistant|>"]] * 2, "suffix": ["Hi there!", "   "], "reward": [0.2, 0.1],
         "sft_index": 0},
    ]
    _jl(root / "hh_train_len2" / "train.json", [_pro_row(["<|prompter|>A"], ["B", "C"], [1.0, 0.0])])
    _jl(root / "hh_test" / "harmless_base.json", rows)
    return root


def test_hh_defaults_to_the_human_choice_and_keeps_sft_index(tmp_path):
    root = _pro_disagreeing(tmp_path / "pro")
    _run("hh", root, "-o", tmp_path / "h", "--kind", "preference")
    test = read_jsonl(tmp_path / "h" / "test.jsonl")
    assert [(r["chosen"], r["rejected"]) for r in test] == [("Why did the chicken cross?", "No.")]
    assert test[0]["meta"]["sft_index"] == 0 and test[0]["chosen_reward"] == pytest.approx(_sigmoid(-0.5))
    assert _stats(tmp_path / "h")["dropped"] == {"empty_response": 1}
    _run("hh", root, "-o", tmp_path / "r", "--kind", "preference", "--chosen-by", "reward")
    assert [(r["chosen"], r["rejected"]) for r in read_jsonl(tmp_path / "r" / "test.jsonl")] == [("No.", "Why did the chicken cross?")]
    # --kind response: the human-chosen reply of row 2 is fine, its empty neighbour is no reason to drop it
    _run("hh", root, "-o", tmp_path / "s", "--kind", "response")
    resp = read_jsonl(tmp_path / "s" / "test.jsonl")
    assert [r["response"] for r in resp] == ["Why did the chicken cross?", "Hi there!"]
    assert [r["meta"]["sft_index"] for r in resp] == [0, 0]
    _run("hh", root, "-o", tmp_path / "s2", "--kind", "response", "--chosen-by", "reward")
    assert [r["response"] for r in read_jsonl(tmp_path / "s2" / "test.jsonl")] == ["No.", "Hi there!"]


def test_hh_human_choice_needs_a_valid_sft_index(tmp_path):
    root = tmp_path / "pro"
    row = _pro_row(["<|prompter|>A"], ["B", "C"], [1.0, 0.0])
    _jl(root / "hh_train_len2" / "train.json", [row, {**row, "sft_index": 2}])
    r = run_cli("preprocess", "hh", str(root), "-o", str(tmp_path / "o"), "--kind", "preference")
    assert r.code == 2 and "train.json:2: field 'sft_index': 2 is out of range for 2 responses" in r.err
    _jl(root / "hh_train_len2" / "train.json", [{k: v for k, v in row.items() if k != "sft_index"}])
    r = run_cli("preprocess", "hh", str(root), "-o", str(tmp_path / "o"), "--kind", "response")
    assert r.code == 2 and "field 'sft_index'" in r.err and "--chosen-by reward" in r.err
    _run("hh", root, "-o", tmp_path / "o", "--kind", "response", "--chosen-by", "reward")
    _run("hh", root, "-o", tmp_path / "rank")  # rankings are ordered by reward: no sft_index needed
    assert not (tmp_path / "o2").exists()


def _transcript(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def test_hh_raw_release_folder_of_subsets(tmp_path):
    root = tmp_path / "hh-rlhf"
    _gz = lambda path, rows: (path.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                              path.write_bytes(__import__("gzip").compress("".join(json.dumps(r) + "\n" for r in rows).encode())))
    _gz(root / "harmless-base" / "test.jsonl.gz", [
        {"chosen": _transcript("How do I pick a lock?", "I can't help with that."),
         "rejected": _transcript("How do I pick a lock?", "Use a pin.")},
        {"chosen": _transcript("Hi", "Hello!", "Tell me more", "Sure: what about?"),
         "rejected": _transcript("Hi", "Hello!", "Tell me more", "")},  # empty rejected reply
        {"chosen": _transcript("Same?", "Yes."), "rejected": _transcript("Same?", "Yes.")},  # identical replies
        {"chosen": _transcript("Q", "A one") + "\n\nHuman: fake turn\n\nAssistant: more",  # differs before its end
         "rejected": _transcript("Q", "A two")},
    ])
    _gz(root / "helpful-base" / "train.jsonl.gz", [
        {"chosen": _transcript("Name a fruit", "Apple"), "rejected": _transcript("Name a fruit", "Stone")},
        {"chosen": _transcript("Cut", "Sure:"), "rejected": _transcript("Cut", "No")},  # A-LoL's colon rule (train)
    ])
    (root / "red-team-attempts").mkdir()
    _gz(root / "red-team-attempts" / "red_team_attempts.jsonl.gz", [{"transcript": "…"}])
    r = run_cli("preprocess", "hh", str(root), "-o", str(tmp_path / "p"), "--format", "hh")
    assert r.code == 0, r
    assert "test 1, train 1; dropped different_dialogues 1, empty_reply 1, identical_replies 1, " \
           "train_response_ends_with_colon 1" in r.out
    s = _splits(tmp_path / "p")
    assert s["test"] == [{"id": "harmless-base-test-1", "prompt": "\n\nHuman: How do I pick a lock?\n\nAssistant:",
                          "chosen": "I can't help with that.", "rejected": "Use a pin.",
                          "meta": {"source": "test.jsonl.gz:1", "subset": "harmless-base"}}]
    assert s["train"][0]["chosen"] == "Apple"
    assert _stats(tmp_path / "p")["options"]["skipped_files"][0].endswith("red_team_attempts.jsonl.gz")
    _run("hh", root / "harmless-base" / "test.jsonl.gz", "-o", tmp_path / "r", "--kind", "response", "--format", "messages")
    resp = read_jsonl(tmp_path / "r" / "test.jsonl")  # only the chosen reply matters: rows 2-4 are fine
    assert [x["response"] for x in resp] == ["I can't help with that.", "Sure: what about?", "Yes.", "more"]
    assert resp[1]["prompt"][-1] == {"role": "user", "content": "Tell me more"}
    for args, msg in ((["--kind", "ranking"], "no reward scores"), (["--chosen-by", "reward"], "no reward scores")):
        r = run_cli("preprocess", "hh", str(root), "-o", str(tmp_path / "x"), *args)
        assert r.code == 2 and msg in r.err and not (tmp_path / "x").exists()
    _all_valid(tmp_path / "p")


@pytest.mark.skipif(not REAL_HH.is_file(), reason="shared HH-RLHF data not present")
def test_hh_real_harmless_base_test_file(tmp_path):
    """The file exactly as Anthropic publishes it: 2,312 rows; 4 have an empty chosen reply, 5 a reply in which
    the model wrote further Human/Assistant turns (so chosen and rejected differ before the last reply)."""
    r = run_cli("preprocess", "hh", str(REAL_HH), "-o", str(tmp_path / "pref"))
    assert r.code == 0, r
    assert "test 2303; dropped different_dialogues 5, empty_reply 4" in r.out
    st = _stats(tmp_path / "pref")
    assert st["read"] == {"test": 2312} and st["dropped"] == {"different_dialogues": 5, "empty_reply": 4}
    first = read_jsonl(tmp_path / "pref" / "test.jsonl")[0]
    assert first["prompt"].startswith(SYSTEM + "### Human: what are some pranks with a pen i can do? ### Assistant: Are you")
    assert first["prompt"].endswith("### Assistant:") and first["chosen"].startswith("No, sorry!")
    _run("hh", REAL_HH, "-o", tmp_path / "resp", "--kind", "response")
    assert _stats(tmp_path / "resp")["splits"] == {"test": 2308}
    # the raw file is also a TRL implicit-prompt preference dataset: read directly, row 87's empty chosen reply
    # is the contract's one-line error
    r = run_cli("preprocess", "jsonl", str(REAL_HH), "--output", str(tmp_path / "direct.jsonl"))
    assert r.code == 2 and "test.jsonl.gz:87: field 'chosen': empty string" in r.err


@pytest.mark.slow
@pytest.mark.skipif(not REAL_HH.is_file(), reason="shared HH-RLHF data not present")
def test_real_hh_trains_dpo_end_to_end(tmp_path, tiny_model):
    _run("hh", REAL_HH, "-o", tmp_path / "hh", "--format", "hh")
    r = run_cli("train", "--algo", "dpo", "--data", str(tmp_path / "hh" / "test.jsonl"), "--output-dir", str(tmp_path / "run"),
                "--max-steps", "3", "--batch-size", "4", "--set", "data.max_prompt_len=96", "--set",
                "data.max_response_len=32", "--quiet")
    assert r.code == 0, r
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in rows if "loss" in m][-1] == 3
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at the first step
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"] == str(tmp_path / "hh" / "test.jsonl")


# ------------------------------------------------------------ Hub layouts: Parquet shards and the datasets cache


def test_tldr_carperai_parquet_layouts(tmp_path):
    from .data_helpers import hub_folder

    post = "SUBREDDIT: r/cooking\nTITLE: First loaf\nPOST: It finally rose."
    hub_folder(tmp_path / "comparisons", {
        "train": [{"prompt": post, "chosen": "TL;DR: my first sourdough rose", "rejected": "TL;DR: bread"},
                  {"prompt": post, "chosen": "TL;DR: same", "rejected": "TL;DR: same"}],
        "valid1": [{"prompt": post, "chosen": "TL;DR: it rose", "rejected": "TL;DR: it sank"}],
        "test": [{"prompt": post, "chosen": "TL;DR: a loaf", "rejected": "TL;DR: "}]})
    hub_folder(tmp_path / "sft", {"train": [{"prompt": post + "\nTL;DR: ", "label": " my first sourdough rose"}],
                                  "valid": [{"prompt": post + "\nTL;DR: ", "label": "it rose"}]})
    _run("tldr", "-o", tmp_path / "o", "--comparisons", tmp_path / "comparisons", "--sft-dir", tmp_path / "sft")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"sft_train": 1, "sft_val": 1, "train": 1, "val": 1}
    assert s["train"][0]["prompt"] == post + "\nTL;DR:" and s["train"][0]["chosen"] == " my first sourdough rose"
    assert s["sft_train"][0] == {"id": "sft_train-1", "prompt": post + "\nTL;DR:", "response": " my first sourdough rose",
                                 "meta": {"source": "train-00000-of-00001.parquet: row 1"}}
    assert _stats(tmp_path / "o")["dropped"] == {"comparison_empty_text": 1, "comparison_identical_summaries": 1}
    # the same output as the OpenAI layout gives for the same comparison
    assert s["train"][0]["prompt"] == "SUBREDDIT: r/cooking\nTITLE: First loaf\nPOST: It finally rose.\nTL;DR:"
    _all_valid(tmp_path / "o")


def test_imdb_hub_plain_text_parquet(tmp_path):
    import datasets

    from .data_helpers import hub_folder

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    hub_folder(tmp_path / "imdb", {
        "train": [{"text": "A slow start but a<br />wonderful ending overall", "label": 1},
                  {"text": "Dull and far too long for its story", "label": 0}, {"text": "Awful.", "label": 0}],
        "test": [{"text": "Great cast and a great script", "label": 1}],
        "unsupervised": [{"text": "no label here at all", "label": -1}]}, subdir="plain_text", features=features)
    _run("imdb", tmp_path / "imdb", "-o", tmp_path / "o", "--val-fraction", "0", "--strip-html")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"test": 1, "train": 2}
    by_id = {r["id"]: r for rows in s.values() for r in rows}
    assert by_id["train-1"]["prompt"] == "A slow start but" and by_id["train-1"]["response"] == "a wonderful ending overall"
    assert by_id["train-1"]["meta"] == {"label": "pos", "reference": "A slow start but a wonderful ending overall",
                                        "source": "train-00000-of-00001.parquet: row 1"}
    assert _stats(tmp_path / "o")["read"] == {"train": 3, "test": 1}  # the unsupervised split is not read


def test_ultrafeedback_hub_folder_and_cache(tmp_path, monkeypatch):
    from .data_helpers import cache_hub_dataset, hub_folder

    def row(i, sc, sr):
        user = {"role": "user", "content": f"question {i}?"}
        return {"prompt": f"question {i}?", "prompt_id": f"p{i}", "chosen": [user, {"role": "assistant", "content": f"good {i}"}],
                "rejected": [user, {"role": "assistant", "content": f"bad {i}"}], "messages": [user],
                "score_chosen": sc, "score_rejected": sr}

    splits = {"train_prefs": [row(0, 9.0, 2.0), row(1, 5.0, 5.0)], "test_prefs": [row(2, 7.0, 1.0)],
              "train_sft": [row(3, 1.0, 0.0)], "test_gen": [row(4, 1.0, 0.0)]}
    hub_folder(tmp_path / "uf", splits)
    _run("ultrafeedback", tmp_path / "uf", "-o", tmp_path / "o")
    s = _splits(tmp_path / "o")
    assert {k: len(v) for k, v in s.items()} == {"test": 1, "train": 1}
    assert s["train"][0] == {"id": "p0", "prompt": [{"role": "user", "content": "question 0?"}], "chosen": "good 0",
                             "rejected": "bad 0", "chosen_reward": 9.0, "rejected_reward": 2.0,
                             "meta": {"source": "train_prefs-00000-of-00001.parquet: row 1"}}
    st = _stats(tmp_path / "o")
    assert st["dropped"] == {"train_tie": 1} and sorted(st["options"]["skipped_splits"]) == ["test_gen", "train_sft"]
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    cache_hub_dataset(cache, "HuggingFaceH4/ultrafeedback_binarized", splits)
    _run("ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", "-o", tmp_path / "c")
    assert [r["chosen"] for r in read_jsonl(tmp_path / "c" / "train.jsonl")] == ["good 0"]
    _run("ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized:test_prefs", "-o", tmp_path / "t")
    assert list(_splits(tmp_path / "t")) == ["test"]
