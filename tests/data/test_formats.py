"""Bring your own data (issue 18): one loader for every --data-like option and every format, TRL's
dataset types, outputs that `datasets` loads back — and the contract's one-line errors in each format."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lolkit.data.loader import Row, open_source, output_format, source_digest, write_records
from lolkit.data.schema import load_prompts, load_records, parse_record
from lolkit.errors import LolkitError

from ..conftest import read_jsonl, write_jsonl
from .data_helpers import cache_hub_dataset, dataset, hub_folder, parquet

ROWS = [{"prompt": "What colour is a lime?", "completion": "green", "reward": 0.5},
        {"prompt": "What colour is snow?", "completion": "white", "reward": 1.0},
        {"prompt": "What colour is coal?", "completion": "black", "reward": 0.25}]


def _same(records) -> list[tuple]:
    return [(r.kind, r.prompt, r.responses, r.rewards) for r in records]


EXPECTED = [("response", r["prompt"], [r["completion"]], [r["reward"]]) for r in ROWS]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-datasets-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ every format, same records


def test_every_format_gives_the_same_records(tmp_path, hub_cache):
    jl = write_jsonl(tmp_path / "a.jsonl", ROWS)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(jl.read_bytes()))
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    csv = _csv(tmp_path / "a.csv", "prompt,completion,reward\n" + "".join(
        f"{r['prompt']},{r['completion']},{r['reward']}\n" for r in ROWS))
    tsv = _csv(tmp_path / "a.tsv", "prompt\tcompletion\treward\n" + "".join(
        f"{r['prompt']}\t{r['completion']}\t{r['reward']}\n" for r in ROWS))
    pq = parquet(tmp_path / "a.parquet", ROWS)
    dataset(ROWS).save_to_disk(str(tmp_path / "saved"))
    import datasets

    datasets.DatasetDict({"train": dataset(ROWS), "test": dataset(ROWS[:1])}).save_to_disk(str(tmp_path / "dict"))
    hub_folder(tmp_path / "repo", {"train": ROWS, "test": ROWS[:1]})
    cache_hub_dataset(hub_cache, "someorg/colours", {"train": ROWS, "test": ROWS[:1]})
    for spec in (jl, gz, arr, csv, tsv, pq, tmp_path / "saved", f"{tmp_path / 'dict'}:train", f"{tmp_path / 'repo'}:train",
                 "someorg/colours:train"):
        recs = load_records(spec)
        assert _same(recs) == EXPECTED, spec
    # ids: the line in JSON lines, the row elsewhere
    assert [r.id for r in load_records(jl)] == ["line-1", "line-2", "line-3"]
    assert [r.id for r in load_records(pq)] == ["row-1", "row-2", "row-3"]
    assert _same(load_records(f"{tmp_path / 'dict'}:test")) == EXPECTED[:1]
    assert _same(load_records("someorg/colours:test")) == EXPECTED[:1]
    assert _same(load_prompts(tmp_path / "saved")) == EXPECTED


def test_a_json_file_of_json_lines_and_a_folder_of_shards(tmp_path):
    lines = tmp_path / "train.json"  # PRO, FaithDial and many Hub repos name JSON lines .json
    lines.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    assert [r.id for r in load_records(lines)] == ["line-1", "line-2", "line-3"]
    shards = tmp_path / "shards"
    parquet(shards / "data" / "train-00000-of-00002.parquet", ROWS[:2])
    parquet(shards / "data" / "train-00001-of-00002.parquet", ROWS[2:])
    assert _same(load_records(shards)) == EXPECTED  # one split: no name needed; shards in order


def test_bom_is_accepted_in_json_lines_json_and_csv(tmp_path):
    bom = "\ufeff"
    jl = tmp_path / "b.jsonl"
    jl.write_text(bom + "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    arr = tmp_path / "b.json"
    arr.write_text(bom + json.dumps(ROWS), encoding="utf-8")
    csv = _csv(tmp_path / "b.csv", bom + "prompt,completion,reward\n" + "".join(
        f"{r['prompt']},{r['completion']},{r['reward']}\n" for r in ROWS))
    for spec in (jl, arr, csv):
        assert _same(load_records(spec)) == EXPECTED, spec
        assert _same(load_prompts(spec)) == EXPECTED, spec


def test_csv_cells_are_text_numbers_and_json_where_the_contract_says(tmp_path):
    f = _csv(tmp_path / "c.csv", 'prompt,responses,rewards,meta\n007,"[""a"", ""b""]","[1, 2]","{""k"": 1}"\n')
    rec = load_records(f)[0]
    assert rec.prompt == "007" and rec.responses == ["a", "b"] and rec.rewards == [1.0, 2.0] and rec.meta == {"k": 1}
    conv = _csv(tmp_path / "conv.csv", 'prompt,completion\n"[{""role"": ""user"", ""content"": ""hi""}]",hello\n'
                'plain [text],"multi\nline"\n')
    a, b = load_records(conv)
    assert a.prompt == [{"role": "user", "content": "hi"}] and b.prompt == "plain [text]" and b.responses == ["multi\nline"]


# -------------------------------------------------------------------------------------- errors per format


@pytest.mark.parametrize("make, expected", [
    (lambda d: parquet(d / "x.parquet", [{"prompt": "p", "completion": "c"}, {"prompt": "", "completion": "c"}]),
     "x.parquet: row 2: field 'prompt': empty string"),
    (lambda d: parquet(d / "x.parquet", [{"prompt": "p", "completion": "c", "reward": float("nan")}]),
     "x.parquet: row 1: field 'reward': reward must be finite"),
    (lambda d: parquet(d / "x.parquet", [{"prompt": "p", "completion": "c", "chosen": None, "rejected": None},
                                         {"prompt": "p", "completion": None, "chosen": "a", "rejected": "b"}]),
     "x.parquet: row 2: a preference record in a file of response records"),
    (lambda d: parquet(d / "x.parquet", [{"id": "a", "prompt": "p", "completion": "c"}] * 2),
     "x.parquet: row 2: field 'id': duplicate id 'a' (first on row 1)"),
    (lambda d: _csv(d / "x.csv", "prompt,chosen\np,a\n"), "x.csv: row 1: field 'rejected': missing field"),
    (lambda d: _csv(d / "x.csv", "prompt,completion,reward\np,c,high\n"), "x.csv: row 1: field 'reward': expected a number, got 'high'"),
    (lambda d: _csv(d / "x.csv", ""), "x.csv: file is empty"),
    (lambda d: _csv(d / "x.json", '[{"prompt": "p", "completion": "c"}, 3]'), "x.json: row 2: expected a JSON object, got int"),
    (lambda d: _csv(d / "x.json", '[{"prompt": "p", '), "x.json:1: invalid JSON"),
    (lambda d: _csv(d / "x.jsonl.gz", '{"prompt": "p", "completion": "c"}\n'), "x.jsonl.gz: not a gzip file"),
])
def test_errors_name_the_file_the_row_and_the_field(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(LolkitError) as e:
        load_records(path)
    assert expected in str(e.value) and str(e.value).startswith(str(tmp_path)), str(e.value)


def test_damaged_files_are_one_line_errors(tmp_path):
    good = parquet(tmp_path / "good.parquet", ROWS * 50)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(LolkitError, match=r"cut.parquet: cannot be read \(.*Parquet"):
        load_records(cut)
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in ROWS * 200))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LolkitError, match="cut.jsonl.gz: truncated gzip file"):
        load_records(tmp_path / "cut.jsonl.gz")


def test_splits_must_be_named_when_there_are_several(tmp_path, hub_cache):
    import datasets

    datasets.DatasetDict({"train": dataset(ROWS), "test": dataset(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(LolkitError, match=r"dict: holds the splits train, test; name one as .*dict:SPLIT"):
        load_records(tmp_path / "dict")
    with pytest.raises(LolkitError, match=r"dict: no split 'validation' \(it has: train, test\)"):
        load_records(f"{tmp_path / 'dict'}:validation")
    with pytest.raises(LolkitError, match="a single file has no splits"):
        load_records(f"{write_jsonl(tmp_path / 'a.jsonl', ROWS)}:train")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no data here")
    with pytest.raises(LolkitError, match="empty: is a directory, but holds no dataset"):
        load_records(tmp_path / "empty")
    cache_hub_dataset(hub_cache, "org/multi", {"train": ROWS}, config="a")
    cache_hub_dataset(hub_cache, "org/multi", {"train": ROWS[:1]}, config="b")
    with pytest.raises(LolkitError, match=r"org/multi: cached with several configurations \(.*\); name one"):
        load_records("org/multi")
    assert len(load_records("org/multi:b")) == 1 and len(load_records("org/multi:a:train")) == 3
    with pytest.raises(LolkitError, match="data/missing.jsonl: file not found"):
        load_records("data/missing.jsonl")


def test_an_uncached_hub_id_fails_at_once_with_one_line(tmp_path):
    """Through the real CLI, in a fresh process: no network is tried, the answer comes at once."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lolkit.cli", "preprocess", "jsonl", "nosuch-org/nosuch-data",
                        "--output", str(tmp_path / "out.jsonl")], capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nosuch-org/nosuch-data: not a local file or folder, and not "
                                                   "in the Hugging Face datasets cache"), r.stderr
    assert took < 30 and not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------------------------- TRL dataset types


def _rec(obj, **kw):
    return parse_record("f.jsonl", 1, obj, **kw)


def test_trl_language_modelling_prompt_only_and_prompt_completion():
    text = _rec({"text": "The sky is blue.", "reward": 0.5})
    assert (text.kind, text.prompt, text.responses, text.rewards) == ("response", "", ["The sky is blue."], [0.5])
    assert text.to_json() == {"id": "line-1", "text": "The sky is blue.", "reward": 0.5}  # read back as it was
    conv = _rec({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    assert conv.prompt == [{"role": "user", "content": "hi"}] and conv.responses == ["hello"]
    pc = _rec({"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]})
    assert pc.prompt == [{"role": "user", "content": "2+2?"}] and pc.responses == ["4"]
    with pytest.raises(LolkitError, match="f.jsonl:1: a prompt-only record"):
        _rec({"prompt": "only a prompt"})


def test_prompt_only_files_feed_generate_eval_and_online_but_not_training(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]}])
    assert [r.prompt for r in load_prompts(f)] == ["a", [{"role": "user", "content": "b"}]]
    with pytest.raises(LolkitError, match="p.jsonl:1: a prompt-only record"):
        load_records(f)
    t = write_jsonl(tmp_path / "t.jsonl", [{"text": "just text"}])
    with pytest.raises(LolkitError, match="t.jsonl:1: field 'prompt': missing field .*'text' record has no prompt"):
        load_prompts(t)


@pytest.mark.parametrize("chosen, rejected, prompt, c, r", [
    # an Anthropic transcript: the prompt ends with the last shared "Assistant:" turn marker
    ("\n\nHuman: Hi?\n\nAssistant: I can help.", "\n\nHuman: Hi?\n\nAssistant: I cannot.",
     "\n\nHuman: Hi?\n\nAssistant:", " I can help.", " I cannot."),
    # identical replies still split at the marker (both completions whole)
    ("\n\nHuman: Hi?\n\nAssistant: Same.", "\n\nHuman: Hi?\n\nAssistant: Same.",
     "\n\nHuman: Hi?\n\nAssistant:", " Same.", " Same."),
    # TRL's rule: the differing text starts after a space, which goes to the completions
    ("The answer is 4", "The answer is 5", "The answer is", " 4", " 5"),
    # mid-word divergence backs off to the word boundary (TRL would cut "I l" / "ike cats")
    ("I like cats", "I love dogs", "I", " like cats", " love dogs"),
    # divergence at a word boundary: no back-off
    ("Sure thing", "Sure, no", "Sure", " thing", ", no"),
])
def test_implicit_prompt_preference_standard(chosen, rejected, prompt, c, r):
    rec = _rec({"chosen": chosen, "rejected": rejected})
    assert (rec.prompt, rec.responses) == (prompt, [c, r])


def test_implicit_prompt_preference_conversational_and_ultrafeedback_style():
    user = {"role": "user", "content": "Capital of France?"}
    good, bad = {"role": "assistant", "content": "Paris."}, {"role": "assistant", "content": "Lyon."}
    rec = _rec({"chosen": [user, good], "rejected": [user, bad]})
    assert rec.prompt == [user] and rec.responses == ["Paris.", "Lyon."]
    # a string prompt beside whole conversations (ultrafeedback_binarized): TRL takes the prompt from them
    uf = _rec({"prompt": "Capital of France?", "chosen": [user, good], "rejected": [user, bad], "score_chosen": 9.0})
    assert uf.prompt == [user] and uf.meta == {"prompt": "Capital of France?", "score_chosen": 9.0}
    with pytest.raises(LolkitError, match="f.jsonl:1: field 'chosen': chosen and rejected share no prompt"):
        _rec({"chosen": "abc", "rejected": "xyz"})


def test_unpaired_preference_is_refused_unless_converted_and_stepwise_is_refused():
    kto = {"prompt": "p", "completion": "bad answer", "label": False}
    with pytest.raises(LolkitError, match=r"f.jsonl:1: field 'label': a TRL unpaired-preference \(KTO\) record.*"
                                          r"--label-reward"):
        _rec(kto)
    rec = _rec(kto, label_reward=True)
    assert rec.rewards == [0.0] and "label" not in rec.meta
    assert _rec({**kto, "label": True}, label_reward=True).rewards == [1.0]
    with pytest.raises(LolkitError, match="field 'completions': a TRL stepwise-supervision record"):
        _rec({"prompt": "p", "completions": ["step 1", "step 2"], "labels": [True, False]})
    # a label that is not a desirability flag is an ordinary extra field
    assert _rec({"prompt": "p", "completion": "c", "label": "pos"}).meta == {"label": "pos"}


def test_unknown_fields_are_kept_in_meta():
    rec = _rec({"prompt": "p", "completion": "c", "source": "web", "score": 3, "meta": {"k": 1, "source": "mine"}})
    assert rec.meta == {"k": 1, "source": "mine", "score": 3, "fields": {"source": "web"}}
    pref = _rec({"prompt": "p", "chosen": "a", "rejected": "b", "reward": 2.0})  # 'reward' is not a pair's field
    assert pref.meta == {"reward": 2.0} and pref.to_json()["meta"] == {"reward": 2.0}


def test_eval_inputs_refuse_duplicate_ids_and_mixed_kinds_and_rankings_need_two(tmp_path):
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "q", "prompt": "a"}, {"id": "q", "prompt": "b"}])
    with pytest.raises(LolkitError, match=r"dup.jsonl:2: field 'id': duplicate id 'q' \(first on line 1\)"):
        load_prompts(dup)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "a", "response": "r"}, {"prompt": "b", "chosen": "x", "rejected": "y"}])
    with pytest.raises(LolkitError, match="mixed.jsonl:2: a preference record in a file of response records"):
        load_prompts(mixed)
    both = write_jsonl(tmp_path / "both.jsonl", [{"prompt": "a"}, {"prompt": "b", "response": "r"}])
    with pytest.raises(LolkitError, match="both.jsonl:2: a response record in a file of prompt-only records"):
        load_prompts(both)
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "a", "responses": ["x"], "rewards": [1]}])
    with pytest.raises(LolkitError, match="one.jsonl:1: field 'responses': a ranking needs at least 2 responses"):
        load_records(one)


# ------------------------------------------------------------------------------------------------ writers


def test_outputs_are_written_in_the_format_their_name_says_and_load_back(tmp_path):
    import datasets

    rows = [r.to_json() for r in load_records(write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "p1", "completion": "c1", "reward": 1.0, "meta": {"a": 1}},
        {"prompt": [{"role": "user", "content": "p2"}], "completion": "c2", "rewards": {"x": 0.5}},
    ]))]
    assert [output_format(p) for p in ("a.parquet", "a.arrow", "dir/", "a.jsonl.gz", "a.jsonl", "a")] == \
        ["parquet", "arrow", "arrow", "jsonl.gz", "jsonl", "jsonl"]
    assert rows[0]["prompt"] == "p1" and isinstance(rows[1]["prompt"], list)
    same = [rows[0], {**rows[1], "prompt": "p2"}]  # one prompt type per column, as Arrow needs
    for name in ("o.parquet", "o.arrow", "o.jsonl.gz", "o.jsonl"):
        assert write_records(tmp_path / name, same) == 2
        back = (datasets.load_from_disk(str(tmp_path / name)) if name.endswith(".arrow") else
                datasets.load_dataset("parquet" if name.endswith(".parquet") else "json",
                                      data_files=str(tmp_path / name), split="train", cache_dir=str(tmp_path / "c")))
        assert back.num_rows == 2 and back[0]["prompt"] == "p1" and back[0]["meta"]["a"] == 1, name
        assert [(r.prompt, r.responses, r.rewards, r.meta) for r in load_records(tmp_path / name)] == \
            [("p1", ["c1"], [1.0], {"a": 1}), ("p2", ["c2"], [None], {})], name
    with pytest.raises(LolkitError, match="cannot be written as parquet: a column mixes value types"):
        write_records(tmp_path / "mixed.parquet", rows)
    assert not (tmp_path / "mixed.parquet").exists()
    (tmp_path / "folder").mkdir()
    with pytest.raises(LolkitError, match="folder: is a directory"):
        write_records(tmp_path / "folder", same)
    with pytest.raises(LolkitError, match="folder: is a directory"):
        write_records(f"{tmp_path / 'folder'}/", same)  # an arrow output never replaces a foreign folder
    write_records(tmp_path / "o.arrow", same[:1])  # ... but does replace a dataset it wrote
    assert datasets.load_from_disk(str(tmp_path / "o.arrow")).num_rows == 1


def test_source_digest_follows_the_bytes_and_rows_report_their_file(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS)
    d1 = source_digest(a)
    write_jsonl(a, ROWS[:2])
    assert source_digest(a) != d1
    parquet(tmp_path / "f" / "data" / "train-00000-of-00002.parquet", ROWS[:1])
    parquet(tmp_path / "f" / "data" / "train-00001-of-00002.parquet", [{"prompt": "p", "completion": ""}])
    src = open_source(tmp_path / "f")
    labels = [label for label, _, _ in src.rows()]
    assert [Path(x).name for x in labels] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    with pytest.raises(LolkitError, match=r"train-00001-of-00002.parquet: row 1: field 'completion': empty string"):
        load_records(tmp_path / "f")
    assert f"{'x.parquet'}:{Row(3)}" == "x.parquet: row 3" and int(Row(3)) == 3


# ------------------------------------------------------------------- every command reads every format


def test_train_reward_eval_and_generate_read_parquet_arrow_csv_and_the_hub_cache(tmp_path, cli, tiny_model, hub_cache):
    """Each command through the real CLI on non-JSONL data; outputs in Parquet / Arrow load back."""
    import datasets

    rows = [{"prompt": f"What colour is a {o}?", "completion": f"a {o} is {c}.", "reward": 0.2 + 0.1 * i}
            for i, (o, c) in enumerate([("lime", "green"), ("lemon", "yellow"), ("plum", "purple"), ("snow", "white"),
                                        ("coal", "black"), ("cherry", "red"), ("sky", "blue"), ("grass", "green")])]
    pq = parquet(tmp_path / "train.parquet", rows)
    dataset(rows[:3]).save_to_disk(str(tmp_path / "val"))
    csv = _csv(tmp_path / "test.csv", "id,prompt\n" + "".join(f"q{i},{r['prompt']}\n" for i, r in enumerate(rows[:3])))
    cache_hub_dataset(hub_cache, "someorg/colours", {"train": rows, "test": rows[:2]})
    res = cli("train", "--algo", "wbc", "--data", pq, "--val-data", tmp_path / "val", "--output-dir", tmp_path / "run",
              "--max-steps", "2", "--batch-size", "4", "--quiet")
    assert res.code == 0, res
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"] == str(pq)
    res = cli("train", "--algo", "nll", "--data", "someorg/colours:train", "--output-dir", tmp_path / "run2",
              "--max-steps", "1", "--batch-size", "4", "--quiet")
    assert res.code == 0, res
    res = cli("reward", "--input", "someorg/colours:test", "--output", tmp_path / "scored.parquet", "--quiet")
    assert res.code == 0, res
    scored = datasets.load_dataset("parquet", data_files=str(tmp_path / "scored.parquet"), split="train",
                                   cache_dir=str(tmp_path / "c"))
    assert scored.num_rows == 2 and all(0 <= x <= 1 for x in scored["reward"])
    res = cli("generate", "--model", "tiny", "--data", csv, "--output", tmp_path / "gen.arrow", "--num-samples", "2",
              "--max-new-tokens", "4", "--quiet")
    assert res.code == 0, res
    gen = datasets.load_from_disk(str(tmp_path / "gen.arrow"))
    assert set(gen["meta"][0]) >= {"source_id", "sample", "finished"}
    res = cli("eval", "--model", tmp_path / "run", "--data", csv, "--reward", "colours", "--metrics", "none", "--quiet")
    assert res.code == 0, res
    assert [r["id"] for r in read_jsonl(tmp_path / "run" / "eval" / "generations.jsonl")] == ["q0", "q1", "q2"]


def test_language_modelling_text_records_train_on_every_token(tmp_path, cli, tiny_tokenizer):
    """A TRL `text` record: empty prompt → the model's start token (EOS when it has no BOS), so every
    token of the text is a target, as in TRL's SFT."""
    from lolkit.data.tokenize import encode_pair

    enc = encode_pair(tiny_tokenizer, "", "The sky is blue.", 8, 64)
    assert enc.prompt_ids == (tiny_tokenizer.eos_token_id,)
    assert list(enc.response_ids) == tiny_tokenizer("The sky is blue.", add_special_tokens=False)["input_ids"] + [
        tiny_tokenizer.eos_token_id]
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": f"The colour of snow number {i} is white."} for i in range(10)])
    res = cli("train", "--algo", "nll", "--data", data, "--output-dir", tmp_path / "run", "--max-steps", "1", "--quiet")
    assert res.code == 0, res
