"""The offline-advantage engine: cached reference pass, advantages, pools and samplers, and every
algorithm of the A-LoL family end to end on the tiny model."""

import random
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

import lolkit.engine.reference as reference
from lolkit.config import TrainConfig, build
from lolkit.engine.sampling import build_pool, epoch_order
from lolkit.errors import LolkitError
from lolkit.io import read_json
from lolkit.run import read_metrics
from lolkit.train import train

from ..conftest import write_jsonl

ALGOS = ["nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl"]
BASE = {"batch_size": 8, "eval_prompts": 4, "save_every": 0, "optim": {"lr": 3e-3}, "eval": {"max_new_tokens": 8}}


def cfg_for(tmp_path, name, **kw):
    algo = kw.pop("algo", {})
    return build(TrainConfig, BASE, {"output_dir": str(tmp_path / name), "algo": {"cache_dir": str(tmp_path / "cache"),
                                                                                  **algo}, **kw})


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_trains_from_the_cli(algo, tmp_path, cli, tiny_model):
    run = tmp_path / algo
    res = cli("train", "--algo", algo, "--max-steps", "3", "--batch-size", "8", "--output-dir", run,
              "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=8", "--set", f"algo.cache_dir={tmp_path / 'c'}",
              "--quiet")
    assert res.code == 0, res
    rows = read_metrics(run)
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if algo.startswith("a_lol"):
        stats = read_json(run / "advantage_stats.json")
        assert {"count", "kept_fraction", "mean", "median", "std", "min", "max", "p10", "p90"} <= set(stats)
        assert stats["count"] == 768 and 0 < stats["kept_fraction"] <= 1
        assert read_json(run / "run.json")["pool"] == stats["kept"]  # A <= 0 left the pool


def test_second_run_reuses_the_reference_cache(tmp_path, tiny_model, monkeypatch):
    first = train(cfg_for(tmp_path, "one", max_steps=2, algo={"name": "a_lol"}), quiet=True)
    info = read_json(first / "engine.json")
    assert info["reference"]["cached"] is False and info["value"]["cached"] is False

    def boom(*a, **k):
        raise AssertionError("the reference pass ran again")

    monkeypatch.setattr(reference, "compute_reference", boom)
    second = train(cfg_for(tmp_path, "two", max_steps=2, algo={"name": "a_lol_seq"}), quiet=True)
    info2 = read_json(second / "engine.json")
    assert info2["reference"]["cached"] is True and info2["reference"]["key"] == info["reference"]["key"]
    assert info2["value"]["cached"] is True
    # a different tokenisation setting is a different key: never trust a mismatched cache
    monkeypatch.undo()
    third = train(cfg_for(tmp_path, "three", max_steps=1, algo={"name": "a_lol"}, data={"max_response_len": 4}), quiet=True)
    assert read_json(third / "engine.json")["reference"]["key"] != info["reference"]["key"]


def test_cached_reference_equals_a_fresh_forward(tmp_path, tiny_model):
    from lolkit.algorithms import get_algorithm
    from lolkit.data.dataset import load_train_data
    from lolkit.data.tokenize import collate
    from lolkit.logprobs import forward_logprobs
    from lolkit.models import ModelConfig, load_model

    run = train(cfg_for(tmp_path, "r", max_steps=1, algo={"name": "a_lol_seq"}), quiet=True)
    key = read_json(run / "engine.json")["reference"]["key"]
    cached = load_file(next((tmp_path / "cache").glob(f"ref-{key[:24]}")) / "reference.safetensors")
    model, tok, _ = load_model(ModelConfig(), trainable=False)
    data = load_train_data(build(TrainConfig).data, tok, get_algorithm("a_lol"))
    idx = [0, 5, 17]
    batch = collate([data.examples[i].encoded for i in idx], idx, tok.pad_token_id)
    seq, tokens, _ = forward_logprobs(model, batch)
    torch.testing.assert_close(cached["seq_logps"][idx], seq, atol=1e-5, rtol=1e-5)
    off = cached["offsets"]
    torch.testing.assert_close(cached["token_logps"][off[5] : off[6]], tokens[1][batch.response_mask[1].bool()],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algo", ["a_lol", "a_lol_seq", "r_gold"])
def test_gradient_accumulation_invariance(algo, tmp_path, tiny_model):
    a = train(cfg_for(tmp_path, "big", max_steps=2, micro_batch_size=8, algo={"name": algo}), quiet=True)
    b = train(cfg_for(tmp_path, "acc", max_steps=2, micro_batch_size=1, algo={"name": algo}), quiet=True)
    for ra, rb in zip(read_metrics(a), read_metrics(b), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)
    # Adam divides by sqrt(v): float round-off on near-zero gradients moves a few weights by ~1e-5
    wa, wb = load_file(a / "final/model.safetensors"), load_file(b / "final/model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-4)


def test_data_value_source_cross_fits(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "d", max_steps=2, algo={"name": "a_lol", "value_source": "data", "value_folds": 3}),
                quiet=True)
    info = read_json(run / "engine.json")["value"]
    assert info["source"] == "data" and info["folds"] == 3
    assert read_json(run / "advantage_stats.json")["value_source"] == "data"


def test_reference_value_needs_a_reward(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {w}.", "response": f"{w}.", "reward": i % 3 / 2}
                                              for i, w in enumerate(["red", "blue", "green", "plum"] * 6)])
    with pytest.raises(LolkitError, match="--value-source reference needs a reward"):
        train(cfg_for(tmp_path, "x", max_steps=1, data={"train": str(data), "val_fraction": 0.3},
                      algo={"name": "a_lol", "value_source": "reference"}), quiet=True)
    run = train(cfg_for(tmp_path, "y", max_steps=1, data={"train": str(data), "val_fraction": 0.3},
                        algo={"name": "a_lol"}), quiet=True)  # auto → data without a reward
    assert read_json(run / "engine.json")["value"]["source"] == "data"


def test_negative_rewards_are_refused_or_shifted(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "neg.jsonl", [{"prompt": f"Say {w}.", "response": f"{w}.", "reward": -1.0 + i % 3}
                                                for i, w in enumerate(["red", "blue", "green", "plum"] * 4)])
    with pytest.raises(LolkitError, match=r"neg.jsonl:1: field 'reward': negative reward -1.0 \(wbc"):
        train(cfg_for(tmp_path, "n", max_steps=1, data={"train": str(data), "val_fraction": 0.0}, algo={"name": "wbc"}),
              quiet=True)
    run = train(cfg_for(tmp_path, "s", max_steps=1, data={"train": str(data), "val_fraction": 0.0, "shift_rewards": True},
                        algo={"name": "wbc"}), quiet=True)
    assert read_json(run / "run.json")["reward_shift"] == 1.0


def test_pools():
    adv = [0.5, -0.1, 0.0, 1.5]
    assert build_pool(4, adv, None, "none", drop_nonpositive=True) == ([0, 3], None)
    assert build_pool(4, adv, None, "good_priority", drop_nonpositive=True) == ([0, 3], [0.5, 1.5])
    assert build_pool(4, None, [1.0, 0.0, 2.0, 1.0], "good_priority", drop_nonpositive=False) == ([0, 1, 2, 3], [1.0, 0.0, 2.0, 1.0])
    assert build_pool(4, adv, None, "good_random", drop_nonpositive=False) == ([0, 3], None)
    assert build_pool(4, None, None, "none", drop_nonpositive=False) == ([0, 1, 2, 3], None)
    with pytest.raises(LolkitError, match="no training example has a positive advantage"):
        build_pool(2, [-1.0, 0.0], None, "none", drop_nonpositive=True)
    with pytest.raises(LolkitError, match="unknown sampling strategy"):
        build_pool(2, None, None, "best", drop_nonpositive=False)


def test_priority_sampler_frequencies_match_weights():
    pool, weights = [3, 7, 9], [1.0, 2.0, 5.0]
    counts: Counter = Counter()
    for epoch in range(4000):
        order = epoch_order(pool, weights, random.Random(f"s-{epoch}"))
        assert len(order) == len(pool)
        counts.update(order)
    total = sum(counts.values())
    for i, w in zip(pool, weights, strict=True):
        assert counts[i] / total == pytest.approx(w / 8.0, abs=0.01)
    # same seed, same draws; plain epochs are permutations
    assert epoch_order(pool, weights, random.Random(1)) == epoch_order(pool, weights, random.Random(1))
    assert sorted(epoch_order(pool, None, random.Random(2))) == pool


def test_all_priority_uses_every_positive_response_of_a_record(tmp_path, tiny_model):
    rows = [{"prompt": f"What colour is a {o}?", "responses": [f"a {o} is red.", "i do not know.", f"a {o} is {o}."],
             "rewards": [1.0, 0.0, 0.9]} for o in ["tomato", "cherry", "ruby", "strawberry"] * 3]
    rows = [{**r, "id": i} for i, r in enumerate(rows)]
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    common = {"data": {"train": str(data), "val_fraction": 0.0}, "max_steps": 1, "batch_size": 4}
    best = train(cfg_for(tmp_path, "best", algo={"name": "a_lol", "value_source": "data", "value_folds": 2,
                                                 "max_reward": 1.0}, **common), quiet=True)
    every = train(cfg_for(tmp_path, "all", algo={"name": "a_lol", "value_source": "data", "value_folds": 2,
                                                 "max_reward": 1.0, "sampling": "all_priority"}, **common), quiet=True)
    assert read_json(best / "run.json")["examples"] == 12  # the top response of each record
    assert read_json(every / "run.json")["examples"] == 36
    assert read_json(every / "run.json")["pool"] > read_json(best / "run.json")["pool"]
