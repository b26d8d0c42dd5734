"""CoLA (latent-action control): hand-derived goldens for the pure pieces, module invariants, and the three
stages end to end from the CLI on the tiny model (docs/cola.md)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lolkit.cola.modules import (
    ColaConfig,
    LatentPolicy,
    WorldModel,
    attention_mask,
    codebook_perplexity,
    gumbel_straight_through,
    usage_entropy,
)
from lolkit.cola.rl import group_baseline

from ..conftest import read_jsonl, write_jsonl


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The modules are small: on a shared 2-core machine one thread avoids OpenMP spin-waits (15x here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------------
# goldens
# --------------------------------------------------------------------------------------------------
def test_gumbel_straight_through_is_exact_one_hot_with_soft_gradient():
    # logits [0, ln 3], g = 0, τ = 1 → soft [0.25, 0.75]; forward exactly [0, 1]
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64, requires_grad=True)
    y = gumbel_straight_through(logits, 1.0, noise=torch.zeros(2, dtype=torch.float64))
    assert y.tolist() == [0.0, 1.0]  # exact, not 1 − 1e-16
    (y * torch.tensor([1.0, 0.0], dtype=torch.float64)).sum().backward()
    # d soft_0 / d logits = soft_0 (e_0 − soft) = 0.25 · [0.75, −0.75]
    assert logits.grad.tolist() == pytest.approx([0.1875, -0.1875], abs=1e-12)


def test_gumbel_forward_is_one_hot_for_random_logits_and_tau():
    torch.manual_seed(0)
    logits = torch.randn(50, 7) * 3
    for tau in (0.3, 1.0, 5.0):
        y = gumbel_straight_through(logits, tau)
        assert set(y.unique().tolist()) <= {0.0, 1.0} and torch.equal(y.sum(-1), torch.ones(50))


def test_gumbel_noise_is_added_before_the_argmax():
    # logits [0, 0]; g = [1, 0] → argmax 0; τ = 0.5 → soft = softmax([2, 0]) = [0.8808, 0.1192]
    logits = torch.zeros(2, requires_grad=True)
    y = gumbel_straight_through(logits, 0.5, noise=torch.tensor([1.0, 0.0]))
    assert y.tolist() == [1.0, 0.0]
    y[0].backward()
    s0 = 1 / (1 + math.exp(-2))
    assert logits.grad.tolist() == pytest.approx([s0 * (1 - s0) / 0.5, -s0 * (1 - s0) / 0.5], rel=1e-6)


def test_usage_entropy_and_codebook_perplexity_goldens():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    valid = torch.tensor([True, True, False])  # the third position is padding
    assert float(usage_entropy(p, valid)) == pytest.approx(math.log(2))
    assert codebook_perplexity([2, 1, 1, 0]) == pytest.approx(2**1.5)  # H = 1.5 ln 2
    assert codebook_perplexity([5, 0, 0]) == pytest.approx(1.0)
    assert codebook_perplexity([3] * 64) == pytest.approx(64.0)


def test_quality_diversity_on_hand_made_embeddings():
    from lolkit.cola.evaluate import side_summary

    # group A: [1,0], [0,1], [1,1] → cosines 0, 1/√2, 1/√2 → mean √2/3 = 0.471405
    # group B: [1,0], [2,0] → cosine 1.  S = (√2/3 + 1) / 2 = 0.735702, QD = 1/S = 1.359246
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    rows = [{"response": f"r{i}", "reward": 0.5, "num_tokens": 2} for i in range(5)]
    s = side_summary(rows, [[0, 1, 2], [3, 4]], emb)
    assert s["qd_similarity"] == pytest.approx((math.sqrt(2) / 3 + 1) / 2)
    assert s["qd"] == pytest.approx(2 / (math.sqrt(2) / 3 + 1))
    assert s["qd_groups"] == 2 and s["reward_mean"] == 0.5
    # opposite samples: S = −1 ≤ 0 → QD undefined, and said so
    neg = side_summary(rows[:2], [[0, 1]], torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert neg["qd_similarity"] == pytest.approx(-1.0) and neg["qd"] is None and "undefined" in neg["qd_note"]


def test_group_baseline_golden():
    assert group_baseline(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2).tolist() == [0.5, -0.5, 0.0, 0.0]


# --------------------------------------------------------------------------------------------------
# module invariants
# --------------------------------------------------------------------------------------------------
def test_policy_is_causal_and_ignores_left_padding():
    torch.manual_seed(0)
    cfg = ColaConfig(hidden_size=16, num_actions=8, width=32)
    pol = LatentPolicy(cfg).eval()
    h = torch.randn(1, 5, 16)
    ref = pol(h, torch.ones(1, 5, dtype=torch.bool))
    padded = torch.cat([torch.full((1, 3, 16), 7.0), h], dim=1)  # 3 padding positions on the left
    valid = torch.tensor([[False] * 3 + [True] * 5])
    out = pol(padded, valid)
    assert torch.isfinite(out).all()  # a padding row always attends to itself: no NaN to leak
    assert torch.allclose(out[:, 3:], ref, atol=1e-5)
    changed = h.clone()
    changed[0, 4] += 1.0  # the future does not change the past
    assert torch.allclose(pol(changed, torch.ones(1, 5, dtype=torch.bool))[:, :4], ref[:, :4], atol=1e-6)
    m = attention_mask(valid)[0, 0]
    assert m[0].tolist() == [True] + [False] * 7 and m[4].tolist() == [False] * 3 + [True, True] + [False] * 3


def test_untrained_world_model_is_the_base_lm():
    torch.manual_seed(0)
    cfg = ColaConfig(hidden_size=16, num_actions=8)
    wm = WorldModel(cfg)
    head = torch.nn.Linear(16, 30, bias=False)
    h = torch.randn(4, 16)
    for a in (torch.tensor([0, 3, 7, 1]), torch.eye(8)[[2, 2, 5, 6]]):  # indices or one-hot
        assert torch.equal(wm(h, a, head), head(h))


# --------------------------------------------------------------------------------------------------
# the three stages from the CLI on the tiny model
# --------------------------------------------------------------------------------------------------
WORLD_STEPS, BC_STEPS, RL_STEPS = 200, 100, 20
OBJECTS = ("tomato", "banana", "frog", "crow")  # 4 of the colours task's 32 objects: 12 prompts, 96 answers


@pytest.fixture(scope="module")
def cola_run(tmp_path_factory, tiny_model):
    """Stage 0, stage 1 and latent RL from the CLI on the colours task's training records for 4 objects
    (each prompt: 2 expert answers, reward 1.0; 4 confused, 0.4; 2 lazy, 0.2; the random tiny base
    needs a small corpus to be learnt in seconds)."""
    from lolkit.tasks import colours

    from ..conftest import run_cli

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cola")
    rows = [r for r in colours.records("train") if r["meta"]["object"] in OBJECTS]
    corpus = write_jsonl(root / "corpus.jsonl", rows)
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": p} for p in sorted({r["prompt"] for r in rows})])
    run = root / "run"
    res = {}
    res["world"] = run_cli("cola", "world", "--model", "tiny", "--data", corpus, "--output-dir", run,
                           "--steps", WORLD_STEPS, "--quiet")
    res["bc"] = run_cli("cola", "bc", "--run", run, "--steps", BC_STEPS, "--quiet")
    res["rl"] = run_cli("cola", "rl", "--run", run, "--data", prompts, "--reward", "colours", "--steps", RL_STEPS,
                        "--quiet")
    return run, res, prompts


def test_world_model_loss_falls_and_codes_do_not_collapse(cola_run):
    run, res, _ = cola_run
    assert res["world"].code == 0, res["world"]
    s = json.loads((run / "world" / "summary.json").read_text())
    assert s["world_nll_initial"] == pytest.approx(s["base_nll"])  # starts as the base LM
    assert s["world_nll_final"] < s["world_nll_initial"] / 20  # measured 6.22 → 0.034
    # Collapse means perplexity ≈ 1 (every transition explained by one code). An IDM whose codes name the
    # next token would spread them like the corpus' next tokens: unigram perplexity 23.1 here. We ask
    # for at least half of that spread (measured 22.2 of K = 64, 33 codes used).
    assert s["next_token_unigram_perplexity"] == pytest.approx(23.14, abs=0.01)
    assert s["codebook_perplexity"] > s["next_token_unigram_perplexity"] / 2
    rows = read_jsonl(run / "world" / "metrics.jsonl")
    assert len(rows) == WORLD_STEPS and rows[-1]["nll"] < rows[0]["nll"] / 3
    info = json.loads((run / "cola.json").read_text())
    assert info["model"] == "tiny" and info["config"]["num_actions"] == 64
    assert len(list((run / "cache").glob("hidden-*.safetensors"))) == 1
    assert not [p for p in run.rglob(".*tmp-*")]  # no temporaries left


def test_bc_policy_imitates_the_idm(cola_run):
    run, res, _ = cola_run
    assert res["bc"].code == 0, res["bc"]
    assert "reused" in res["bc"].out  # the hidden-state cache of stage 0
    s = json.loads((run / "policy_bc" / "summary.json").read_text())
    assert s["bc_loss_final"] < s["bc_loss_initial"] / 2 and s["bc_accuracy"] > 0.6


def test_latent_rl_raises_the_task_reward(cola_run):
    run, res, _ = cola_run
    assert res["rl"].code == 0, res["rl"]
    s = json.loads((run / "policy_rl" / "summary.json").read_text())
    # the 12 prompts × 2 samples, same sampling seed, BC policy vs RL policy: measured 0.37 → 0.82
    assert s["reward_after"] > s["reward_before"] + 0.25, s
    rows = read_jsonl(run / "policy_rl" / "metrics.jsonl")
    assert len(rows) == RL_STEPS and rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # starts at the BC policy
    assert all(r["kl_beta"] == 0.05 for r in rows)


def test_generate_returns_actions_and_is_deterministic(cola_run, tmp_path, cli):
    run, _, _ = cola_run
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What colour is a lemon?"}, {"prompt": "Numbers:"}])
    outs = []
    for name in ("a", "b"):  # each call loads the base model and the saved modules afresh
        r = cli("cola", "generate", "--run", run, "--data", prompts, "--output", tmp_path / f"{name}.jsonl",
                "--num-samples", 3, "--max-new-tokens", 12)
        assert r.code == 0, r
        outs.append(read_jsonl(tmp_path / f"{name}.jsonl"))
    assert outs[0] == outs[1] and len(outs[0]) == 6
    for row in outs[0]:
        acts = row["meta"]["actions"]
        assert row["meta"]["policy"] == "rl" and 1 <= len(acts) <= 12 and all(0 <= a < 64 for a in acts)


def test_eval_prints_the_quality_diversity_comparison(cola_run, cli):
    run, _, prompts = cola_run
    r = cli("eval", "--model", run, "--data", prompts, "--reward", "colours", "--num-samples", 3, "--max-new-tokens", 12,
            "--set", "eval.max_prompts=6")
    assert r.code == 0, r
    assert "latent actions" in r.out and "token sampling" in r.out and "QD = 1/S" in r.out
    s = json.loads((run / "eval" / "summary.json").read_text())
    for side in ("latent", "token"):
        assert s[side]["qd_groups"] == 6 and -1.0 <= s[side]["qd_similarity"] <= 1.0
        if s[side]["qd_similarity"] > 0:
            assert s[side]["qd"] == pytest.approx(1 / s[side]["qd_similarity"])
    # the task reward of the RL latent policy beats sampling the random tiny base
    assert s["latent"]["reward_mean"] > s["token"]["reward_mean"]
    assert len(read_jsonl(run / "eval" / "generations.jsonl")) == 2 * 6 * 3


# --------------------------------------------------------------------------------------------------
# determinism, atomic stages, user errors
# --------------------------------------------------------------------------------------------------
def test_same_seed_same_modules_and_a_replaced_stage_drops_later_ones(tmp_path, tiny_model):
    from lolkit.cola.train import BCOptions, WorldOptions, train_bc, train_world

    for name in ("a", "b"):
        train_world(WorldOptions(output_dir=str(tmp_path / name), steps=3), quiet=True)
    train_bc(BCOptions(run=str(tmp_path / "a"), steps=1), quiet=True)
    assert (tmp_path / "a" / "policy_bc" / "final" / "policy.safetensors").is_file()
    train_world(WorldOptions(output_dir=str(tmp_path / "a"), steps=3, overwrite=True), quiet=True)
    assert not (tmp_path / "a" / "policy_bc").exists()  # a policy over the old IDM's actions is stale
    for f in ("idm.safetensors", "world_model.safetensors"):
        assert (tmp_path / "a" / "world" / "final" / f).read_bytes() == (tmp_path / "b" / "world" / "final" / f).read_bytes()


def test_user_errors_name_the_problem(tmp_path, cli, tiny_model):
    r = cli("cola", "bc", "--run", tmp_path / "nowhere")
    assert r.code == 2 and "not a CoLA run directory" in r.err
    bad = write_jsonl(tmp_path / "c.jsonl", [{"text": "hello there"}, {"text": 3}])
    r = cli("cola", "world", "--output-dir", tmp_path / "r", "--data", bad, "--steps", 1)
    assert r.code == 2 and f"{bad}:2: field 'text'" in r.err
    r = cli("cola", "world", "--output-dir", tmp_path / "r2", "--width", 30, "--steps", 1)
    assert r.code == 2 and "multiple of" in r.err
