"""A2C and TRPO in the online loop: the run, LoRA, resume, and the loop's first update against float64
references written from the papers (A2C: Mnih et al. 2016 with RL4LMs' RMSprop; TRPO: Schulman et al. 2015)."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lolkit.config import TrainConfig, build
from lolkit.online import updates
from lolkit.rl import gae_loop
from lolkit.run import read_metrics
from lolkit.train import train

from ..conftest import read_jsonl
from .test_online import FAST, TIMING, cfg_for, weights

LENGTH = "tests.loops.test_online:length_reward"


@pytest.mark.parametrize("algo", ["a2c", "trpo"])
def test_run_logs_the_update_and_resumes_exactly(tmp_path, tiny_model, algo):
    opts = {} if algo == "a2c" else {"optim": {}}  # trpo: optim.lr comes from trpo.value_lr
    run = train(cfg_for(tmp_path, "run", algo, max_steps=3, save_every=1, reward=LENGTH, **opts), quiet=True)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[2]["kl"] != 0.0  # the policy moved
    for key in ("loss", "policy_loss", "value_loss", "entropy"):
        assert all(math.isfinite(r[key]) for r in rows), key
    if algo == "a2c":
        assert "clip_frac" not in rows[0] and "grad_norm" in rows[0]
        state = load_file(run / "checkpoints" / "step-3" / "trainer" / "optimizer.safetensors")
        assert any(k.endswith("square_avg") for k in state)  # RMSprop's state, as RL4LMs configures A2C
    else:
        assert rows[0]["lr"] == pytest.approx(1e-3)  # trpo.value_lr
        for r in rows:  # the trust region holds at every accepted step
            assert r["trust_kl"] < 0.01 and (r["surrogate_gain"] > 0 or not r["line_search_accepted"])
        assert any(r["line_search_accepted"] for r in rows)
    full = shutil.copytree(run, tmp_path / "uninterrupted")
    shutil.rmtree(run / "checkpoints" / "step-3")
    shutil.rmtree(run / "final")
    resumed = train(cfg_for(tmp_path, "run", algo, max_steps=3, save_every=1, reward=LENGTH, **opts), resume=True,
                    quiet=True)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(read_metrics(full)) == strip(read_metrics(resumed))


def test_trpo_with_lora_moves_only_the_adapter_and_a_separate_critic(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "l", "trpo", max_steps=2, save_every=2, reward=LENGTH, optim={},
                        model={"lora": True, "lora_r": 4}, ppo={**FAST["ppo"], "critic": "separate"}), quiet=True)
    assert json.loads((run / "run.json").read_text())["reference"] == "adapter disabled"
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    rows = read_metrics(run)
    assert rows[1]["kl"] != 0.0 and all(r["trust_kl"] < 0.01 for r in rows)
    assert (run / "checkpoints" / "step-2" / "trainer" / "critic.safetensors").exists()


def test_trpo_refuses_a_policy_learning_rate(tmp_path, tiny_model, cli):
    res = cli("train", "--algo", "trpo", "--lr", "1e-4", "--output-dir", tmp_path / "t", "--max-steps", "1",
              "--quiet")
    assert res.code == 2 and not (tmp_path / "t").exists()
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "takes no policy learning rate" in lines[0] and "trpo.value_lr" in lines[0]
