"""Online RL end to end: run directory, exact resume, NLPO's mask refresh, LoRA, CLI, and a reward rise."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lolkit.config import TrainConfig, build
from lolkit.logprobs import token_entropy as entropy
from lolkit.online.nlpo import nucleus_mask
from lolkit.run import read_metrics
from lolkit.train import train

from ..conftest import read_jsonl

# Small and fast: one optimizer step of two micro-batches per rollout.
FAST = {"batch_size": 4, "micro_batch_size": 2, "optim": {"lr": 1e-3},
        "ppo": {"max_new_tokens": 6, "epochs": 1, "minibatch_size": 4, "mask_update_every": 2},
        "data": {"task": "numbers"}, "eval_prompts": 3, "eval": {"max_new_tokens": 6}}
TIMING = ("tokens_per_s", "iteration_time")


def cfg_for(tmp_path, name, algo="ppo", **kw):
    layer = {**FAST, "algo": {"name": algo}, "output_dir": str(tmp_path / name), **kw}
    return build(TrainConfig, layer)


def weights(run):
    return load_file(run / "final" / "model.safetensors")


def digit_reward(prompts, responses, references, metas):
    """A Python callable reward (``--reward tests.loops.test_online:digit_reward``)."""
    return [sum(c.isdigit() for c in r) / 10 for r in responses]


def length_reward(prompts, responses, references, metas):
    """Never constant, so every rollout moves the policy (a constant reward gives zero advantages)."""
    return [len(r) / 20 for r in responses]


def test_run_directory_contract(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "r", max_steps=2, save_every=1, ppo={**FAST["ppo"], "rollout_samples": 0}), quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "rollouts.jsonl", "run.json", "final/model.safetensors",
                 "final/value_head.safetensors", "checkpoints/step-2/trainer/optimizer.safetensors",
                 "checkpoints/step-2/trainer/value_head.safetensors"):
        assert (run / name).exists(), name
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "lr", "reward_mean", "kl", "kl_beta", "tokens_per_s", "policy_loss", "value_loss", "entropy"):
        assert all(isinstance(r[key], float) and r[key] == r[key] for r in rows), key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout's policy is the reference
    assert rows[1]["kl_beta"] == pytest.approx(rows[0]["kl_beta_next"])
    samples = read_jsonl(run / "rollouts.jsonl")
    assert len(samples) == 8 and {s["step"] for s in samples} == {1, 2}
    info = json.loads((run / "run.json").read_text())
    assert info["reference"] == "frozen copy" and info["val_prompts"] == 1  # the numbers task has one
    # validation (greedy answers to the task's validation prompts) at the end, the best model kept
    assert "val_reward" not in rows[0] and 0.0 <= rows[1]["val_reward"] <= 1.0
    best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
    assert best == {"step": 2, "metric": "val_reward", "value": rows[1]["val_reward"]}


@pytest.mark.parametrize("algo", ["nlpo"])  # ppo: tests/loops/test_contract.py
def test_resume_matches_uninterrupted_run(tmp_path, tiny_model, algo):
    run = train(cfg_for(tmp_path, "run", algo, max_steps=4, save_every=2, eval_every=1), quiet=True)
    full = shutil.copytree(run, tmp_path / "uninterrupted")  # keep the uninterrupted result
    # Then simulate a kill right after iteration 2's checkpoint: later state disappears, while metrics
    # and rollouts rows 3-4 stay behind and must be dropped by the resume.
    shutil.rmtree(run / "checkpoints" / "step-4")
    shutil.rmtree(run / "final")
    resumed = train(cfg_for(tmp_path, "run", algo, max_steps=4, save_every=2, eval_every=1), resume=True, quiet=True)
    a, b = weights(full), weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert strip(read_metrics(full)) == strip(read_metrics(resumed))
    assert all("val_reward" in r for r in read_metrics(resumed))
    # the best validation score survives the resume (restored from the checkpoint's state)
    assert (full / "checkpoints" / "best" / "best.json").read_text() == \
        (resumed / "checkpoints" / "best" / "best.json").read_text()
    assert [r["step"] for r in read_jsonl(resumed / "rollouts.jsonl")] == [r["step"] for r in read_jsonl(full / "rollouts.jsonl")]


def test_nlpo_mask_policy_is_refreshed_every_k_rollouts(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "n", "nlpo", max_steps=5, save_every=0, reward="tests.loops.test_online:length_reward"),
                quiet=True)
    rows = read_metrics(run)
    assert [r["mask_refreshes"] for r in rows] == [0, 0, 1, 1, 2]
    c = [r["mask_checksum"] for r in rows]
    assert c[0] == c[1] and c[2] == c[3]  # fixed between refreshes
    assert c[1] != c[2] and c[3] != c[4]  # changed by each refresh (the policy trained meanwhile)


def test_mask_policy_unit(tiny_model):
    from lolkit.models import ModelConfig, load_model
    from lolkit.online.nlpo import MaskPolicy

    policy, tok, _ = load_model(ModelConfig(name=tiny_model), trainable=True)
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    mask = MaskPolicy(policy, names, 0.9, update_every=3)
    assert [mask.due(i) for i in range(7)] == [False, False, False, True, False, False, True]
    before = mask.checksum()
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    assert mask.checksum() == before  # a copy, not a view of the policy
    mask.refresh(policy)
    assert mask.checksum() != before and mask.refreshes == 1
    for (n, p), (_, q) in zip(policy.named_parameters(), mask.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    # the logits processor keeps only the mask policy's nucleus
    from lolkit.generation import sample_tokens

    ids = tok("Numbers:")["input_ids"]
    out = sample_tokens(policy, [ids] * 3, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=4,
                        logits_processor=mask.processor)
    assert len(out) == 3 and all(1 <= len(r) <= 4 for r, _ in out)


def test_nucleus_mask_golden_and_masked_entropy():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64))
    # cumulative mass before each token: [0, 0.5, 0.8, 0.95] → keep while < 0.9: the first three
    assert nucleus_mask(logits, 0.9).tolist() == [True, True, True, False]
    assert nucleus_mask(logits, 0.1).tolist() == [True, False, False, False]  # the top token always stays
    masked = logits.masked_fill(~nucleus_mask(logits, 0.5), float("-inf"))  # keeps the top token only
    assert entropy(masked).item() == pytest.approx(0.0)
    assert entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))


def test_lora_reference_is_the_disabled_adapter_and_separate_critic(tmp_path, tiny_model):
    run = train(cfg_for(tmp_path, "l", max_steps=2, save_every=2, model={"lora": True, "lora_r": 4},
                        ppo={**FAST["ppo"], "critic": "separate", "value_clip": 0.2}), quiet=True)
    assert json.loads((run / "run.json").read_text())["reference"] == "adapter disabled"
    assert (run / "final" / "adapter_model.safetensors").exists()
    assert (run / "checkpoints" / "step-2" / "trainer" / "critic.safetensors").exists()
    rows = read_metrics(run)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and all(r["loss"] == r["loss"] for r in rows)


def test_qlora_ppo_trains_the_adapter_over_a_4bit_base(tmp_path, tiny_model):
    """QLoRA (nf4 base, LoRA adapter) on CPU: the reference is the base with the adapter switched off,
    only adapter weights change, and the run resumes like any other."""
    run = train(cfg_for(tmp_path, "q", max_steps=2, save_every=1, model={"qlora": True, "lora_r": 4},
                        reward="tests.loops.test_online:length_reward"), quiet=True)
    info = json.loads((run / "run.json").read_text())
    assert info["reference"] == "adapter disabled" and info["trainable_parameters"] < info["parameters"] / 10
    rows = read_metrics(run)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[1]["kl"] != 0.0  # the adapter moved
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)


def test_cli_with_prompts_file_and_callable_reward(tmp_path, tiny_model, cli):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Count to {n}:"}) + "\n" for n in range(6)))
    out = tmp_path / "cli"
    res = cli("train", "--algo", "nlpo", "--data", prompts, "--reward", "tests.loops.test_online:digit_reward",
              "--output-dir", out, "--max-steps", "2", "--batch-size", "4", "--set", "ppo.max_new_tokens=5",
              "--set", "ppo.minibatch_size=4", "--quiet")
    assert res.code == 0, res
    assert len(read_metrics(out)) == 2 and (out / "final" / "model.safetensors").exists()
    res = cli("train", "--algo", "ppo", "--data", prompts, "--output-dir", tmp_path / "x", "--max-steps", "1", "--quiet")
    assert res.code != 0 and "needs a reward" in (res.err + res.out)


@pytest.mark.slow
def test_ppo_raises_the_increasing_numbers_reward(tmp_path):
    """PPO on RL4LMs' increasing-numbers task with a tiny model, in well under a minute on 2 CPU cores.

    Why this setup: a random tiny model almost never writes a number, so the reward is ~0 and PPO has
    nothing to climb. We therefore (1) train the tiny model's BPE tokenizer on number text too, so
    numbers are single tokens, and (2) warm-start with 40 NLL steps on the task's offline records
    (jumbled numbers, some increasing runs, some non-answers): the policy then writes numbers, mostly
    not increasing (mean reward ≈ 0.16). PPO (batch 32, 12 new tokens, 2 epochs, small fixed KL)
    then has to find the increasing order itself; in 20 rollouts the mean reward roughly doubles.
    """
    from lolkit.tasks import numbers
    from lolkit.tiny import create_tiny_model

    base = create_tiny_model(tmp_path / "base", extra_texts=numbers.corpus() * 5)
    sft = train(build(TrainConfig, {
        "algo": {"name": "nll"}, "model": {"name": str(base)}, "data": {"task": "numbers"},
        "output_dir": str(tmp_path / "sft"), "max_steps": 40, "batch_size": 16, "save_every": 0,
        "optim": {"lr": 3e-3, "scheduler": "constant"}, "eval_prompts": 2, "eval": {"max_new_tokens": 4}}),
        quiet=True)
    run = train(build(TrainConfig, {
        "algo": {"name": "ppo"}, "model": {"name": str(sft / "final")}, "data": {"task": "numbers"},
        "output_dir": str(tmp_path / "ppo"), "max_steps": 20, "batch_size": 32, "save_every": 0,
        "optim": {"lr": 1e-3, "scheduler": "constant"},
        "ppo": {"max_new_tokens": 12, "epochs": 2, "minibatch_size": 16, "kl_beta": 0.01, "kl_target": None}}),
        quiet=True)
    rewards = [r["reward_mean"] for r in read_metrics(run)]
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert end > start + 0.08 and end > 1.5 * start, rewards
