"""Nothing is cut silently (issue 16, item 2): lengths come from the data, a short context clamps them
with one warning, every split reports its cuts, and data.truncation = warn | error | drop decides.

Each test builds a small file whose token counts are worked out with the tiny tokenizer itself, so
the expected counts are exact, not ranges."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lolkit.algorithms import get_algorithm
from lolkit.config import DataConfig
from lolkit.data.dataset import load_train_data
from lolkit.data.tokenize import encode_pair, pair_lengths, prompt_limit, render_prompt
from lolkit.errors import LolkitError
from lolkit.io import read_json
from tests.conftest import write_jsonl

# 240 words: the completion that used to train on its first 64 tokens without a word anywhere
LONG = " ".join(["the red tomato is a fruit and the yellow banana is long"] * 20).split()
assert len(LONG) == 240
LONG_TEXT = " ".join(LONG) + "."


def _file(tmp_path: Path, long_at: int = 3, n: int = 12) -> Path:
    """``n`` prompt/completion records (TRL's format); record ``long_at`` (1-based line) has the 240-word
    completion, the others a short one."""
    rows = [{"prompt": f"What colour is thing {i}?", "completion": LONG_TEXT if i + 1 == long_at else "it is red."}
            for i in range(n)]
    return write_jsonl(tmp_path / "long.jsonl", rows)


def _tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _data(path: Path, tok, window: int | None = 1024, **data) -> object:
    cfg = DataConfig(train=str(path), val_fraction=0.0, **data)
    return load_train_data(cfg, tok, get_algorithm("nll"), window=window)


def test_default_lengths_come_from_the_data_and_cut_nothing(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    n_long = _tokens(tok, LONG_TEXT)
    assert n_long > 64  # the old default would have cut it
    data = _data(_file(tmp_path), tok)
    longest_prompt = max(len(tok(f"What colour is thing {i}?")["input_ids"]) for i in range(12))
    assert (data.max_prompt_len, data.max_response_len) == (longest_prompt, n_long + 1)  # + EOS
    ex = data.examples[2]
    assert ex.encoded.response_ids == tuple(tok(LONG_TEXT, add_special_tokens=False)["input_ids"]) + (tok.eos_token_id,)
    assert not ex.encoded.truncated
    t = data.truncation["train"]
    assert (t.prompts, t.prompts_cut, t.responses, t.responses_cut, t.dropped) == (12, 0, 12, 0, 0)
    assert data.limits.origin == "data" and data.limits.clamped is None


def test_explicit_length_warns_and_counts_the_240_word_completion(tmp_path, tiny_tokenizer, capsys):
    data = _data(_file(tmp_path), tiny_tokenizer, max_response_len=64)
    assert data.max_response_len == 64 and data.limits.origin == "data+config"
    ex = data.examples[2]
    assert len(ex.encoded.response_ids) == 64 and ex.encoded.truncated
    assert ex.encoded.response_ids[-1] != tiny_tokenizer.eos_token_id
    t = data.truncation["train"]
    assert (t.responses, t.responses_cut, t.prompts_cut, t.dropped) == (12, 1, 0, 0)
    lines = []
    data.report(lines.append)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: train: 0 of 12 prompts cut to {data.max_prompt_len} tokens, 1 of 12 responses cut to "
                   "64 tokens (data.truncation=drop leaves them out, =error stops at the first)"]
    assert lines == []  # the empty validation split has nothing to report


def test_a_response_filling_max_response_len_exactly_loses_its_eos_and_counts(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    n = _tokens(tok, "it is red.")
    fits = _data(_file(tmp_path, long_at=0), tok, max_response_len=n + 1)  # room for the EOS
    assert fits.truncation["train"].responses_cut == 0
    full = _data(_file(tmp_path, long_at=0), tok, max_response_len=n)  # the response fills it: no EOS
    assert full.truncation["train"].responses_cut == 12 and full.examples[0].encoded.truncated


def test_error_names_file_line_and_field_of_the_first_cut(tmp_path, tiny_tokenizer):
    path = _file(tmp_path, long_at=3)
    n_long = _tokens(tiny_tokenizer, LONG_TEXT)
    with pytest.raises(LolkitError) as e:
        _data(path, tiny_tokenizer, max_response_len=64, truncation="error")
    assert str(e.value) == (f"{path}:3: field 'response': {n_long + 1} tokens with its EOS, more than "
                            "data.max_response_len = 64 (data.truncation=error; raise the limit, or set "
                            "data.truncation to warn or drop)")
    with pytest.raises(LolkitError, match=rf"{path}:1: field 'prompt': \d+ tokens, more than data.max_prompt_len = 2"):
        _data(path, tiny_tokenizer, max_prompt_len=2, truncation="error")
    _data(path, tiny_tokenizer, truncation="error")  # lengths from the data: nothing to stop at


def test_drop_leaves_the_example_out_and_counts_it(tmp_path, tiny_tokenizer):
    data = _data(_file(tmp_path), tiny_tokenizer, max_response_len=64, truncation="drop")
    assert len(data.examples) == 11 and data.truncation["train"].dropped == 1
    assert all(not e.encoded.truncated for e in data.examples)
    assert all(e.record != 2 for e in data.examples)  # corpus row 2 = line 3, the long one


def test_drop_of_a_pair_drops_the_whole_unit(tmp_path, tiny_tokenizer):
    rows = [{"prompt": f"p{i}?", "chosen": "it is red.", "rejected": LONG_TEXT if i == 1 else "it is blue."}
            for i in range(4)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    data = load_train_data(DataConfig(train=str(path), val_fraction=0.0, max_response_len=64, truncation="drop"),
                           tiny_tokenizer, get_algorithm("dpo"), which="pair", window=1024)
    assert data.units.shape == (3, 2) and data.truncation["train"].dropped == 1
    assert sorted({data.examples[int(i)].record for i in data.units.ravel()}) == [0, 2, 3]


def test_a_short_context_clamps_with_one_warning():
    lim = pair_lengths(None, None, 300, 500, 128, "m")
    # the response keeps half the context (64), the prompt takes the rest
    assert (lim.max_prompt_len, lim.max_response_len) == (64, 64)
    assert lim.clamped == ("the data's longest prompt and response need 300 + 500 tokens, more than the context "
                           "of m (128); cutting to data.max_prompt_len = 64, data.max_response_len = 64")
    # a short prompt leaves the response the rest of the context
    assert pair_lengths(None, None, 20, 500, 128).max_response_len == 108
    # set lengths the data does not need are kept as they are: nothing to clamp
    assert pair_lengths(1020, 64, 30, 20, 1024) == pair_lengths(1020, 64, 30, 20, 1024)
    assert pair_lengths(1020, 64, 30, 20, 1024).clamped is None
    assert pair_lengths(1020, 64, 1020, 64, 1024).max_prompt_len == 960
    # generating loops: the whole prompt up to what the context leaves after the new tokens
    assert prompt_limit(None, 1024, 32).max_prompt_len == 992 and prompt_limit(None, None, 32).max_prompt_len is None
    assert prompt_limit(2000, 1024, 32).clamped.endswith("cutting prompts to 992 tokens")
    with pytest.raises(LolkitError, match="leave no room for a prompt"):
        prompt_limit(None, 32, 32)


def _short_context_model(tmp_path: Path, tiny_model: str, positions: int) -> Path:
    model = tmp_path / f"ctx{positions}"
    shutil.copytree(tiny_model, model)
    conf = json.loads((model / "config.json").read_text())
    conf["max_position_embeddings"] = positions
    (model / "config.json").write_text(json.dumps(conf))
    return model


def test_train_on_a_short_context_model_clamps_warns_once_and_reports(tmp_path, tiny_model, cli, tiny_tokenizer):
    """Today this fails ("exceed the model's context"); now it trains, with one warning line, and
    run.json records the lengths, the clamp and the counts of both splits."""
    model = _short_context_model(tmp_path, tiny_model, 128)
    path = _file(tmp_path, n=40)
    res = cli("train", "--algo", "nll", "--model", model, "--data", path, "--max-steps", "1", "--batch-size", "4",
              "--output-dir", tmp_path / "run", "--set", "data.val_fraction=0.2", "--set", "eval_prompts=2",
              "--set", "eval.max_new_tokens=4", "--quiet")
    assert res.code == 0, res
    warnings = [x for x in res.err.splitlines() if x.startswith("warning:")]
    info = read_json(tmp_path / "run" / "run.json")["truncation"]
    assert warnings[0].startswith("warning: the data's longest prompt and response need ")
    assert "more than the context of" in warnings[0] and "(128)" in warnings[0]
    assert info["max_prompt_len"] + info["max_response_len"] <= 128 and info["clamped"] in warnings[0]
    assert info["policy"] == "warn" and info["lengths_from"] == "data"
    train, val = info["train"], info["val"]
    assert train["prompts"] + val["prompts"] == 40 and train["dropped"] == val["dropped"] == 0
    assert train["responses_cut"] + val["responses_cut"] == 1  # the 240-word completion, in one split
    cut_split = "train" if train["responses_cut"] else "val"
    assert any(f"warning: {cut_split}: " in w and "1 of" in w for w in warnings) and len(warnings) == 2
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"max_response_len: {info['max_response_len']}" in config  # resolved in config.yaml too


def test_run_json_reports_both_splits_of_a_default_run(tmp_path, tiny_model, cli):
    res = cli("train", "--algo", "nll", "--max-steps", "1", "--output-dir", tmp_path / "run", "--set", "eval_prompts=2",
              "--set", "eval.max_new_tokens=4", "--quiet")
    assert res.code == 0, res
    info = read_json(tmp_path / "run" / "run.json")["truncation"]
    assert info["train"]["responses"] > 0 and info["val"]["prompts"] > 0
    assert info["train"]["responses_cut"] == info["val"]["responses_cut"] == 0
    # --resume with the default (unset) lengths agrees with the resolved ones in config.yaml
    res = cli("train", "--algo", "nll", "--max-steps", "1", "--output-dir", tmp_path / "run", "--set", "eval_prompts=2",
              "--set", "eval.max_new_tokens=4", "--quiet", "--resume")
    assert res.code == 0, res



def test_eval_of_a_run_derives_an_unset_prompt_length_from_its_own_prompts(tmp_path, tiny_model, cli):
    """An offline run writes its lengths resolved into config.yaml (the training data's longest prompt): eval on
    other prompts must not cut them to that length unless the user set it (run.json's truncation.asked)."""
    from lolkit.evaluate import EvalOptions, evaluate

    data = _long_prompts(tmp_path)
    for name, sets in (("unset", []), ("set", ["--set", "data.max_prompt_len=5"])):
        res = cli("train", "--algo", "nll", "--max-steps", "1", "--output-dir", tmp_path / name, "--set",
                  "eval_prompts=2", "--set", "eval.max_new_tokens=4", "--quiet", *sets)
        assert res.code == 0, res
    assert read_json(tmp_path / "unset" / "run.json")["truncation"]["asked"] == {"max_prompt_len": None,
                                                                                "max_response_len": None}
    trained = read_json(tmp_path / "unset" / "run.json")["truncation"]["max_prompt_len"]
    ov = {"eval": {"max_new_tokens": 2}}
    whole = evaluate(EvalOptions(str(tmp_path / "unset"), str(tmp_path / "e1"), str(data), overrides=ov,
                                 metrics="none"), quiet=True)
    assert trained < 20 and whole["truncation"]["max_prompt_len"] == 1024 - 2
    assert whole["truncation"]["test"]["prompts_cut"] == 0
    kept = evaluate(EvalOptions(str(tmp_path / "set"), str(tmp_path / "e2"), str(data), overrides=ov,
                                metrics="none"), quiet=True)
    assert kept["truncation"]["max_prompt_len"] == 5 and kept["truncation"]["test"]["prompts_cut"] == 5


@pytest.mark.slow
def test_truncation_error_through_the_real_cli(tmp_path, tiny_model):
    path = _file(tmp_path, long_at=5)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lolkit.cli", "train", "--algo", "nll", "--data", str(path),
                           "--output-dir", str(out), "--max-steps", "1", "--quiet", "--set", "data.val_fraction=0",
                           "--set", "data.max_response_len=64", "--set", "data.truncation=error"],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}:5: field 'response': ") and "data.max_response_len = 64" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("kind", ["preference", "ranking"])
def test_examples_equal_the_spec_tokenisation(tmp_path, tiny_tokenizer, kind):
    """The memory-mapped path gives exactly what encode_pair gives, example by example."""
    tok = tiny_tokenizer
    rng = np.random.default_rng(0)
    words = LONG[:12]
    text = lambda k: " ".join(rng.choice(words, k))  # noqa: E731
    rows = []
    for i in range(30):
        if kind == "preference":
            rows.append({"prompt": [{"role": "user", "content": text(5)}] if i % 3 == 0 else text(8),
                         "chosen": text(int(rng.integers(1, 40))), "rejected": text(int(rng.integers(1, 40)))})
        else:
            rows.append({"prompt": text(6), "responses": [text(int(rng.integers(1, 30))) for _ in range(3)],
                         "rewards": [float(x) for x in rng.integers(0, 3, 3)]})
    path = write_jsonl(tmp_path / f"{kind}.jsonl", rows)
    algo = get_algorithm("dpo" if kind == "preference" else "pro")
    which = "pair" if kind == "preference" else "ranking"
    cfg = DataConfig(train=str(path), val_fraction=0.0, max_prompt_len=7, max_response_len=20)
    data = load_train_data(cfg, tok, algo, which=which, window=1024)
    for k, ex in enumerate(data.examples):
        row = rows[ex.record]
        response = row["responses"][ex.response] if kind == "ranking" else row[("chosen", "rejected")[ex.response]]
        assert ex.encoded == encode_pair(tok, render_prompt(tok, row["prompt"]), response, 7, 20), k
        assert data.examples[k] == ex
    if kind == "ranking":  # every unit is the record's responses by reward, best first (stable)
        for u in data.units:
            rec = data.examples[int(u[0])].record
            order = sorted(range(3), key=lambda j: -rows[rec]["rewards"][j])
            assert [data.examples[int(i)].response for i in u] == order
    assert data.lengths == [max(len(data.examples[int(i)].encoded) for i in u) for u in data.units]


def test_the_cache_is_keyed_on_file_and_tokenizer(tmp_path, tiny_tokenizer, tiny_model, lolkit_cache):
    from lolkit.data.dataset import datasets_cache, tokenizer_digest
    from lolkit.tiny import create_tiny_model

    path = _file(tmp_path)
    first = _data(path, tiny_tokenizer)
    files = set(datasets_cache().glob("*.arrow"))
    again = _data(path, tiny_tokenizer)
    assert set(datasets_cache().glob("*.arrow")) == files  # nothing new: both tables read back
    assert [e.encoded for e in again.examples] == [e.encoded for e in first.examples]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["completion"] = "it is blue."
    write_jsonl(path, rows)  # the same name, other bytes: a new entry, the new text
    changed = _data(path, tiny_tokenizer)
    assert changed.examples[0].encoded != first.examples[0].encoded
    other = create_tiny_model(tmp_path / "other", vocab_size=300)
    from lolkit.models import load_tokenizer

    tok2 = load_tokenizer(str(other))
    assert tokenizer_digest(tok2) != tokenizer_digest(tiny_tokenizer)
    assert _data(path, tok2).examples[0].encoded == encode_pair(tok2, "What colour is thing 0?", "it is blue.",
                                                                 None, None)


# --- loops that only encode prompts: one helper (encode_prompts), the same counts and policy ----------
def _long_prompts(tmp_path: Path) -> Path:
    # colours prompts, two of them padded far past 6 tokens
    rows = [{"id": f"q{i}", "prompt": ("What colour is a tomato? " * (4 if i in (1, 3) else 1)).strip(),
             "response": "a tomato is red."} for i in range(5)]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def test_eval_counts_cut_prompts_and_applies_the_policy(tmp_path, tiny_model, tiny_tokenizer, capsys):
    from lolkit.evaluate import EvalOptions, evaluate

    data = _long_prompts(tmp_path)
    limit = len(tiny_tokenizer("What colour is a tomato?")["input_ids"])
    ov = {"data": {"max_prompt_len": limit}, "eval": {"max_new_tokens": 2}}
    summary = evaluate(EvalOptions("tiny", str(tmp_path / "warn"), str(data), overrides=ov, metrics="none"), quiet=True)
    assert summary["truncation"]["test"] == {"max_prompt_len": limit, "prompts": 5, "prompts_cut": 2, "dropped": 0}
    assert summary["truncation"]["policy"] == "warn" and summary["num_prompts"] == 5
    assert capsys.readouterr().err.strip() == (f"warning: test: 2 of 5 prompts cut to {limit} tokens "
                                               "(data.truncation=drop leaves them out, =error stops at the first)")
    ov["data"]["truncation"] = "drop"
    dropped = evaluate(EvalOptions("tiny", str(tmp_path / "drop"), str(data), overrides=ov, metrics="none"), quiet=True)
    assert dropped["num_prompts"] == 3 and dropped["truncation"]["test"]["dropped"] == 2
    ov["data"]["truncation"] = "error"
    with pytest.raises(LolkitError, match=rf"{data}:2: field 'prompt': \d+ tokens, more than data.max_prompt_len"):
        evaluate(EvalOptions("tiny", str(tmp_path / "error"), str(data), overrides=ov, metrics="none"), quiet=True)
    assert not (tmp_path / "error").exists()
    # unset: the whole prompt, up to the context minus the new tokens: nothing cut
    whole = evaluate(EvalOptions("tiny", str(tmp_path / "whole"), str(data), overrides={"eval": {"max_new_tokens": 2}},
                                 metrics="none"), quiet=True)
    assert whole["truncation"]["test"]["prompts_cut"] == 0 and whole["truncation"]["max_prompt_len"] == 1024 - 2


def test_generate_counts_cut_prompts(tmp_path, tiny_model):
    from lolkit.generation import GenerationConfig, generate_file

    data = _long_prompts(tmp_path)
    info = generate_file("tiny", str(data), str(tmp_path / "out.jsonl"),
                         GenerationConfig(max_new_tokens=2, num_samples=1, max_prompt_len=8), quiet=True)
    assert info["truncation"]["prompts"] == {"max_prompt_len": 8, "prompts": 5, "prompts_cut": 2, "dropped": 0}
    info = generate_file("tiny", str(data), str(tmp_path / "out2.jsonl"), GenerationConfig(max_new_tokens=2),
                         quiet=True, truncation="drop")
    assert info["truncation"]["prompts"]["prompts_cut"] == 0 and info["prompts"] == 5


@pytest.mark.parametrize("algo", ["ppo", "quark"])
def test_online_and_feedback_runs_count_cut_prompts_in_run_json(tmp_path, tiny_model, cli, algo):
    data = _long_prompts(tmp_path)
    extra = (["--set", "ppo.max_new_tokens=2", "--set", "ppo.minibatch_size=2"] if algo == "ppo" else
             ["--set", "feedback.iterations=1", "--set", "feedback.steps=1", "--set", "feedback.samples_per_prompt=2",
              "--set", "feedback.max_new_tokens=2"])
    res = cli("train", "--algo", algo, "--data", data, "--reward", "colours", "--output-dir", tmp_path / algo,
              "--max-steps", "1", "--batch-size", "2", "--set", "data.max_prompt_len=8",
              *extra, "--quiet")
    assert res.code == 0, res
    info = read_json(tmp_path / algo / "run.json")["truncation"]
    assert info["train"] == {"max_prompt_len": 8, "prompts": 5, "prompts_cut": 2, "dropped": 0}
    assert [x for x in res.err.splitlines() if x.startswith("warning:")] == [
        "warning: train: 2 of 5 prompts cut to 8 tokens (data.truncation=drop leaves them out, =error stops at the first)"]


def test_a_parquet_record_is_named_by_its_row(tmp_path, tiny_tokenizer):
    """Records read from a table format keep the loader's row numbers through the memory-mapped cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"prompt": ["a?", "b?", "c?"], "response": ["x.", LONG_TEXT, "y."]}), path)
    with pytest.raises(LolkitError, match=rf"^{path}: row 2: field 'response': \d+ tokens with its EOS"):
        _data(path, tiny_tokenizer, max_response_len=8, truncation="error")
    data = _data(path, tiny_tokenizer)  # from the cache this time: the rows are still rows
    assert f"{data.corpus.line(1):}" == " row 2" and data.corpus.record(1).line == 2


def test_a_reward_model_records_the_lengths_resolved_from_the_data(tmp_path, tiny_model, cli):
    """Scoring with a trained reward model rebuilds its training sequences with the lengths saved in its
    config: the ones resolved from the data, not a default that would cut the long answer."""
    rows = [{"id": i, "prompt": f"What colour is thing {i}?", "chosen": LONG_TEXT if i == 0 else "it is red.",
             "rejected": "it is blue."} for i in range(8)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    res = cli("train", "--algo", "rm", "--model", tiny_model, "--data", data, "--output-dir", tmp_path / "rm",
              "--max-steps", "1", "--batch-size", "2", "--set", "data.val_fraction=0", "--quiet")
    assert res.code == 0, res
    info = read_json(tmp_path / "rm" / "run.json")["truncation"]
    saved = json.loads((tmp_path / "rm" / "final" / "config.json").read_text())["lolkit_reward_model"]
    assert saved == {"max_prompt_len": info["max_prompt_len"], "max_response_len": info["max_response_len"]}
    assert info["max_response_len"] > 64 and info["train"]["responses_cut"] == 0
