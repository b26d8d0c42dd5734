import json

import pytest

from lolkit.data.schema import load_records
from lolkit.errors import LolkitError

from ..conftest import write_jsonl


def test_response_records_and_trl_formats(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "p1", "response": "r1", "reward": 0.5, "rewards": {"a": 0.2, "b": 0.3}, "id": "x", "meta": {"k": 1}},
        {"prompt": "p2", "completion": "r2"},
        {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ])
    recs = load_records(f)
    assert [r.kind for r in recs] == ["response"] * 4
    assert recs[0].rewards == [0.5] and recs[0].components == [{"a": 0.2, "b": 0.3}] and recs[0].id == "x"
    assert recs[1].responses == ["r2"] and recs[1].rewards == [None] and recs[1].id == "line-2"
    assert recs[2].prompt == [{"role": "user", "content": "hi"}] and recs[2].responses == ["hello"]
    assert recs[3].prompt == [{"role": "user", "content": "q"}] and recs[3].responses == ["a"]
    assert recs[0].to_json() == {"id": "x", "prompt": "p1", "response": "r1", "reward": 0.5,
                                 "rewards": {"a": 0.2, "b": 0.3}, "meta": {"k": 1}}


def test_preference_and_ranking(tmp_path):
    pref = load_records(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "p", "chosen": "good", "rejected": "bad", "chosen_reward": 1, "rejected_reward": 0}]))
    assert pref[0].kind == "preference" and pref[0].responses == ["good", "bad"] and pref[0].rewards == [1.0, 0.0]
    rank = load_records(write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": ["a", "b", "c"], "rewards": [1, 3, 2]}]))
    assert rank[0].kind == "ranking" and rank[0].rewards == [1.0, 3.0, 2.0]


@pytest.mark.parametrize("line, expected", [
    ('{"prompt": "p", "response": ', ":1: invalid JSON"),
    ('{"response": "r"}', ":1: field 'prompt': missing field"),
    ('{"prompt": 3, "response": "r"}', ":1: field 'prompt': expected a string or a list of messages, got int"),
    ('{"prompt": "", "response": "r"}', ":1: field 'prompt': empty string"),
    ('{"prompt": "p", "response": "  "}', ":1: field 'response': empty string"),
    ('{"prompt": "p", "response": "r", "reward": NaN}', ":1: field 'reward': reward must be finite"),
    ('{"prompt": "p", "response": "r", "reward": Infinity}', ":1: field 'reward': reward must be finite"),
    ('{"prompt": "p", "response": "r", "reward": "high"}', ":1: field 'reward': expected a number, got str"),
    ('{"prompt": "p", "responses": ["a", "b"], "rewards": [1]}', ":1: field 'rewards': has 1 values for 2 responses"),
    ('{"prompt": "p", "chosen": "a"}', ":1: field 'rejected': missing field"),
    ('[1, 2]', ":1: expected a JSON object, got list"),
    ('{"foo": 1}', ":1: not a lolkit record"),
    ('{"prompt": [{"role": "robot", "content": "x"}], "response": "r"}', "field 'prompt[0].role': unknown role"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, expected):
    f = tmp_path / "bad.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(LolkitError) as e:
        load_records(f)
    assert str(e.value).startswith(str(f)) and expected in str(e.value), str(e.value)


def test_error_on_later_line_reports_that_line(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "response": "r"}] * 2 + ['{"prompt": "p", "response": 5}'])
    with pytest.raises(LolkitError, match=r"x.jsonl:3: field 'response': expected a string, got int"):
        load_records(f)


def test_non_utf8_empty_duplicate_and_mixed(tmp_path):
    f = tmp_path / "bin.jsonl"
    f.write_bytes(b'{"prompt": "p", "response": "r"}\n{"prompt": "\xff\xfe", "response": "r"}\n')
    with pytest.raises(LolkitError, match=r"bin.jsonl:2: not UTF-8"):
        load_records(f)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(LolkitError, match="file is empty"):
        load_records(tmp_path / "empty.jsonl")
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "prompt": "p", "response": "r"}, {"id": "1", "prompt": "q", "response": "r"}])
    with pytest.raises(LolkitError, match=r"dup.jsonl:2: field 'id': duplicate id '1' \(first on line 1\)"):
        load_records(dup)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(LolkitError, match=r"mixed.jsonl:2: a preference record in a file of response records"):
        load_records(mixed)
    with pytest.raises(LolkitError, match="file not found"):
        load_records(tmp_path / "missing.jsonl")


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text("\n" + json.dumps({"prompt": "p", "response": "r"}) + "\n\n" + json.dumps({"prompt": "q", "response": "s"}) + "\n")
    recs = load_records(f)
    assert [r.line for r in recs] == [2, 4]
