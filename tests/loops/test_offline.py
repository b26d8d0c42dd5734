"""Training loop: run-directory contract, exact resume, accumulation invariance, determinism."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lolkit.config import TrainConfig, build
from lolkit.errors import LolkitError
from lolkit.run import read_metrics
from lolkit.train import train

from ..conftest import read_jsonl

BASE = {"batch_size": 8, "eval_prompts": 4, "optim": {"lr": 3e-3}, "eval": {"max_new_tokens": 8}}


def cfg_for(tmp_path, name, **kw):
    layer = {**BASE, "output_dir": str(tmp_path / name), **kw}
    return build(TrainConfig, layer)


def weights(run):
    return load_file(run / "final" / "model.safetensors")


def test_run_directory_contract_and_falling_loss(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "r", max_steps=30, save_every=10), quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "run.json", "final/config.json", "final/model.safetensors",
                 "checkpoints/best/best.json", "checkpoints/step-30/trainer/optimizer.safetensors"):
        assert (run / name).exists(), name
    assert not (run / "checkpoints/step-10").exists()  # save_total_limit 2 keeps step-20 and step-30
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all({"step", "loss", "lr"} <= set(r) for r in rows)
    assert sum(r["loss"] for r in rows[-5:]) / 5 < 0.5 * sum(r["loss"] for r in rows[:5]) / 5
    assert "val_reward" in rows[-1]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "final")


def test_the_reward_is_built_once_and_validation_keeps_the_best(tmp_path, tiny_model, monkeypatch):
    """The validator scores every validation with the reward the loop built at the start (building a reward
    can load a classifier: never once per validation)."""
    import lolkit.rewards as rewards

    built = []
    real = rewards.build_reward
    monkeypatch.setattr(rewards, "build_reward", lambda *a, **k: built.append(1) or real(*a, **k))
    run = train(cfg_for(tmp_path, "v", max_steps=3, eval_every=1, save_every=0, eval_prompts=2), quiet=True)
    rows = read_metrics(run)
    assert len(built) == 1 and all("val_reward" in r for r in rows)
    best = max(range(3), key=lambda k: (rows[k]["val_reward"], -k))
    assert json.loads((run / "checkpoints" / "best" / "best.json").read_text())["step"] == best + 1


def test_same_seed_same_result_and_existing_dir_is_protected(tmp_path, tiny_model):
    r1 = train(cfg_for(tmp_path, "s1", max_steps=3, save_every=0), quiet=True)
    r2 = train(cfg_for(tmp_path, "s2", max_steps=3, save_every=0), quiet=True)
    for k, v in weights(r1).items():
        assert torch.equal(v, weights(r2)[k])
    with pytest.raises(LolkitError, match="run directory exists"):
        train(cfg_for(tmp_path, "s1", max_steps=3), quiet=True)
    with pytest.raises(LolkitError, match="--resume with a different config"):
        train(cfg_for(tmp_path, "s1", max_steps=5), resume=True, quiet=True)


def test_lora_trains_an_adapter_and_eval_loads_it(tmp_path, tiny_model, cli):
    run = train(cfg_for(tmp_path, "lora", max_steps=3, save_every=0, model={"lora": True, "lora_r": 4}), quiet=True)
    assert (run / "final" / "adapter_config.json").exists() and (run / "final" / "adapter_model.safetensors").exists()
    res = cli("eval", "--model", run, "--set", "eval.max_prompts=4", "--quiet")
    assert res.code == 0, res
    rows = read_jsonl(run / "eval" / "generations.jsonl")
    assert len(rows) == 4 and all("reward" in r for r in rows)


@pytest.mark.slow
def test_qlora_trains_on_cpu(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "q", max_steps=2, save_every=0, model={"qlora": True, "lora_r": 4}), quiet=True)
    rows = read_metrics(run)
    assert len(rows) == 2 and all(r["loss"] == r["loss"] for r in rows)
    assert (run / "final" / "adapter_model.safetensors").exists()


def test_val_nll_without_reward(tmp_path, tiny_model):
    from ..conftest import write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Say {w}.", "response": f"{w} {w}."}
                                              for w in ["red", "blue", "green", "white", "black", "plum"] * 4])
    val = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "Say red.", "response": "red red."}])
    run = train(cfg_for(tmp_path, "nr", max_steps=3, save_every=0, data={"train": str(data), "val": str(val)}), quiet=True)
    last = read_metrics(run)[-1]
    assert "val_nll" in last and last["val_nll"] > 0 and "val_reward" not in last


def test_a_lol_same_seed_same_metrics_and_weights(tmp_path, tiny_model):
    """Determinism on CPU for the full engine (reference pass, value estimate, advantages): each run
    has its own engine cache, so both compute everything from scratch."""
    runs = [train(cfg_for(tmp_path, f"d{i}", max_steps=3, save_every=0,
                          algo={"name": "a_lol", "cache_dir": str(tmp_path / f"cache{i}")}), quiet=True) for i in (0, 1)]
    a, b = weights(runs[0]), weights(runs[1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "step_time"} for r in rows]  # noqa: E731
    assert strip(read_metrics(runs[0])) == strip(read_metrics(runs[1]))
    assert (runs[0] / "advantage_stats.json").read_text() == (runs[1] / "advantage_stats.json").read_text()


@pytest.mark.slow
def test_adamw8bit_trains_and_resumes(tmp_path, tiny_model):
    cfg = {"max_steps": 2, "save_every": 1, "optim": {"lr": 3e-3, "optimizer": "adamw8bit"}}
    run = train(cfg_for(tmp_path, "bnb", **cfg), quiet=True)
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    import shutil

    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-2")
    again = train(cfg_for(tmp_path, "bnb", **cfg), resume=True, quiet=True)
    assert [r["step"] for r in read_metrics(again)] == [1, 2]


FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}


@pytest.mark.parametrize(("env", "sharding", "gpus", "refused"), [
    (ZERO3, True, False, None),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, True, True, None),
    (ZERO3, False, True, "offline loop"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, False, True, "offline loop"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, True, True, "ZeRO stage 1"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}, True, False, "no GPU"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "cpu"}, True, True, None),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "nvme"}, True, True, "nvme"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"}, True, True, "zero3_init_flag"),
    (FSDP2, False, True, "offline loop"),
    ({**FSDP2, "FSDP_VERSION": "1"}, True, True, "fsdp_version: 2"),
    ({**FSDP2, "FSDP_OFFLOAD_PARAMS": "true"}, True, False, "no GPU"),
    ({**FSDP2, "FSDP_OFFLOAD_PARAMS": "true"}, True, True, None),
    ({**FSDP2, "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, True, True, "cpu_ram_efficient_loading"),
    (FSDP2, True, False, None),
    ({}, False, False, None)])
def test_launch_modes_a_loop_cannot_honour_are_refused(env, sharding, gpus, refused, monkeypatch):
    from lolkit.run import check_launch

    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_OFFLOAD_PARAMS", "FSDP_CPU_RAM_EFFICIENT_LOADING",
                 "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_ZERO3_INIT",
                 "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if refused:
        with pytest.raises(LolkitError, match=refused):
            check_launch(sharding, gpus)
    else:
        check_launch(sharding, gpus)
