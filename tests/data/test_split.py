"""`lolkit preprocess split`: disjoint parts by prompt, seeded; and `preprocess hh --max-history-turns`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import read_jsonl, write_jsonl

HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


def _rows(n_prompts: int, per: int) -> list[dict]:
    return [{"id": f"{p}-{k}", "prompt": f"question {p}?", "response": f"answer {k}.", "reward": k / per}
            for p in range(n_prompts) for k in range(per)]


def test_split_by_prompt_is_disjoint_seeded_and_complete(tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", _rows(50, 3))
    res = cli("preprocess", "split", data, "-o", tmp_path / "a", "--parts", "train=0.8,val=0.1,test=0.1")
    assert res.code == 0, res
    parts = {k: read_jsonl(tmp_path / "a" / f"{k}.jsonl") for k in ("train", "val", "test")}
    prompts = {k: {r["prompt"] for r in v} for k, v in parts.items()}
    assert [len(prompts[k]) for k in ("train", "val", "test")] == [40, 5, 5]
    assert all(len(v) == 3 * len(prompts[k]) for k, v in parts.items())  # every record of a prompt stays together
    assert not (prompts["train"] & prompts["val"]) and not (prompts["train"] & prompts["test"])
    assert sum(len(v) for v in parts.values()) == 150
    again = tmp_path / "b"
    assert cli("preprocess", "split", data, "-o", again, "--parts", "train=0.8,val=0.1,test=0.1").code == 0
    assert read_jsonl(again / "test.jsonl") == parts["test"]  # same seed, same parts
    other = tmp_path / "c"
    assert cli("preprocess", "split", data, "-o", other, "--parts", "train=0.8,val=0.1,test=0.1", "--seed", "1").code == 0
    assert read_jsonl(other / "test.jsonl") != parts["test"]
    res = cli("preprocess", "split", data, "-o", tmp_path / "d", "--parts", "rm=20,test=5,policy=rest")
    assert res.code == 0 and len({r["prompt"] for r in read_jsonl(tmp_path / "d" / "policy.jsonl")}) == 25


@pytest.mark.parametrize("parts, message", [("train=0.5", "at least two parts"), ("a=0.5,a=0.5", "distinct names"),
                                            ("a=60,b=rest", "50 distinct prompts cannot make"),
                                            ("a=rest,b=rest", "only one part"), ("a=x,b=1", "not a number"),
                                            ("a=1.5,b=2", "a share in (0, 1)")])
def test_split_refuses_impossible_parts(parts, message, tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", _rows(50, 1))
    res = cli("preprocess", "split", data, "-o", tmp_path / "out", "--parts", parts)
    assert res.code == 2 and message in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not HH.is_file(), reason="the shared HH-RLHF file is not here")
def test_hh_last_turns_keep_the_dialogue_end_from_a_human_turn(tmp_path, cli):
    full, short = tmp_path / "full", tmp_path / "short"
    assert cli("preprocess", "hh", HH, "-o", full, "--format", "hh").code == 0
    assert cli("preprocess", "hh", HH, "-o", short, "--format", "hh", "--max-history-turns", "1").code == 0
    a, b = read_jsonl(full / "test.jsonl"), read_jsonl(short / "test.jsonl")
    assert len(a) == len(b) == 2303 and [r["chosen"] for r in a] == [r["chosen"] for r in b]
    assert all(s["prompt"].count("Human:") == 1 and s["prompt"].startswith("\n\nHuman:") for s in b)
    assert all(f["prompt"].endswith(s["prompt"]) for f, s in zip(a, b, strict=True))  # the end is kept
    import json

    trimmed = json.loads((short / "stats.json").read_text())["changed"]["history_trimmed"]
    assert trimmed == sum(1 for r in a if r["prompt"].count("Human:") > 1)
