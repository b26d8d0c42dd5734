"""DPO and PRO: hand-derived goldens, float64 parity, parity with TRL's DPOTrainer, end-to-end runs."""

import copy
import math
import warnings

import pytest
import torch

from lolkit.losses import LossInputs, LossParams, dpo, pro

from ..conftest import write_jsonl
from ..trl_parity import assert_dpo_matches_trl, nudge


def _inp(policy, ref=None, lengths=None, rewards=None):
    policy = torch.tensor(policy, dtype=torch.float32)
    lengths = lengths or [3] * len(policy)
    mask = torch.zeros(len(policy), max(lengths))
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return LossInputs(policy, torch.zeros_like(mask), mask,
                      ref_logps=None if ref is None else torch.tensor(ref, dtype=torch.float32),
                      rewards=None if rewards is None else torch.tensor(rewards, dtype=torch.float32))


def test_dpo_goldens():
    # policy (chosen −10, rejected −14), reference (−11, −12): Δ = (−10+11) − (−14+12) = 1 + 2 = 3
    out = dpo(_inp([-10.0, -14.0], [-11.0, -12.0]), LossParams(beta=0.1))
    assert out.losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))), abs=1e-6)  # 0.554355
    assert out.losses.item() == pytest.approx(0.554355, abs=1e-6)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-0.2)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.3)
    assert out.metrics["rewards/accuracies"].item() == 1.0
    # label smoothing ε = 0.2: 0.8·(−log σ(0.3)) + 0.2·(−log σ(−0.3)) = 0.8·0.554355 + 0.2·0.854355 = 0.614355
    ls = dpo(_inp([-10.0, -14.0], [-11.0, -12.0]), LossParams(beta=0.1, label_smoothing=0.2))
    assert ls.losses.item() == pytest.approx(0.614355, abs=1e-6)
    # reference-free: Δ = −10 − (−14) = 4 → −log σ(0.4) = 0.513015
    rf = dpo(_inp([-10.0, -14.0]), LossParams(beta=0.1, reference_free=True))
    assert rf.losses.item() == pytest.approx(0.513015, abs=1e-6)
    # IPO: log-ratios per token: chosen 1/2 = 0.5, rejected −2/4 = −0.5 → Δ̄ = 1; (1 − 1/(2·0.1))² = (1 − 5)² = 16
    ipo = dpo(_inp([-10.0, -14.0], [-11.0, -12.0], lengths=[2, 4]), LossParams(beta=0.1, dpo_loss="ipo"))
    assert ipo.losses.item() == pytest.approx(16.0)


def test_dpo_layout_is_chosen_rows_then_rejected_rows():
    # two pairs: rows [c0, c1, r0, r1]
    out = dpo(_inp([-1.0, -2.0, -3.0, -1.0], [-1.0, -2.0, -1.0, -2.0]), LossParams(beta=1.0))
    # pair 0: Δ = 0 − (−2) = 2; pair 1: Δ = 0 − 1 = −1
    expected = [-math.log(1 / (1 + math.exp(-2))), -math.log(1 / (1 + math.exp(1)))]
    torch.testing.assert_close(out.losses, torch.tensor(expected))


def _pro_reference(s, r, sft_weight, nll_best):
    """Straight from the spec, float64, loops."""
    n, total = len(s), 0.0
    for k in range(n - 1):
        w = {i: r[k] - r[i] for i in range(k + 1, n)}
        w[k] = max(r[k] - r[i] for i in range(k + 1, n))
        total += math.log(sum(math.exp(w[i] * s[i]) for i in range(k, n))) - w[k] * s[k]
    return total + sft_weight * (n - 1) ** 2 * nll_best


def test_pro_goldens_n2_n3_n4():
    # n = 2: r = (1, 0), s = (−1, −2), w = 1: log(e^−1 + e^−2) + 1 = 0.313262
    out = pro(_inp([-1.0, -2.0], lengths=[1, 1], rewards=[1.0, 0.0]), LossParams(group_size=2, sft_weight=0.0))
    assert out.losses.item() == pytest.approx(0.313262, abs=1e-6)
    # n = 3: r = (2, 1, 0), s = (−1, −1, −1) (equal scores, lengths 1):
    #   k=1: w = (2 [max], 1, 2) → log(e^−2 + e^−1 + e^−2) + 2 = log(0.270671 + 0.367879) + 2 = 1.551445
    #   k=2: w = (1 [max], 1)    → log(e^−1 + e^−1) + 1 = 0.693147
    # sum 2.244592; sft 0.05·(3−1)²·1 = 0.2 → 2.444592
    out = pro(_inp([-1.0, -1.0, -1.0], lengths=[1, 1, 1], rewards=[2.0, 1.0, 0.0]), LossParams(group_size=3))
    assert out.losses.item() == pytest.approx(2.444592, abs=1e-5)
    # n = 4 with length normalisation: log p = (−4, −2, −6, −3), lengths (2, 1, 3, 1) → s = (−2, −2, −2, −3)
    # r = (1, 0.5, 0.5, 0)
    #   k=1: w = (1 [max], 0.5, 0.5, 1): log(e^−2 + e^−1 + e^−1 + e^−3) + 2 = log(0.135335+0.735759+0.049787) + 2
    #        = log(0.920881) + 2 = 1.917574
    #   k=2: w = (0.5 [max], 0, 0.5): log(e^−1 + e^0 + e^−1.5) + 1 = log(1.590998) + 1 = 1.464363
    #   k=3: w = (0.5 [max], 0.5):    log(e^−1 + e^−1.5) + 1 = log(0.591010) + 1 = 0.474083
    # sum 3.856020; sft 0.05·9·4 = 1.8 → 5.656020
    out = pro(_inp([-4.0, -2.0, -6.0, -3.0], lengths=[2, 1, 3, 1], rewards=[1.0, 0.5, 0.5, 0.0]), LossParams(group_size=4))
    assert out.losses.item() == pytest.approx(5.656020, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_pro_float64_parity(seed, n):
    g = torch.Generator().manual_seed(seed)
    B = 3
    logp = (-torch.rand(n * B, generator=g, dtype=torch.float64) * 20).requires_grad_(True)
    lengths = torch.randint(1, 6, (n * B,), generator=g)
    rewards = torch.rand(n, B, generator=g, dtype=torch.float64).sort(dim=0, descending=True).values.reshape(-1)
    mask = (torch.arange(6)[None] < lengths[:, None]).float()
    out = pro(LossInputs(logp.float(), torch.zeros(n * B, 6), mask, rewards=rewards.float()),
              LossParams(group_size=n, sft_weight=0.05))
    lp = logp.detach().view(n, B)
    ln = lengths.view(n, B).double()
    rr = rewards.view(n, B)
    for b in range(B):
        exp = _pro_reference([(lp[i, b] / ln[i, b]).item() for i in range(n)], rr[:, b].tolist(), 0.05, -lp[0, b].item())
        assert out.losses[b].item() == pytest.approx(exp, rel=1e-5)


def test_pro_equal_rewards_count_as_ties_and_have_no_ranking_gradient():
    logp = torch.tensor([-1.0, -3.0, -2.0], requires_grad=True)
    mask = torch.ones(3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a metric, not a warning: the loss reads no global state
        out = pro(LossInputs(logp, torch.zeros(3, 1), mask, rewards=torch.tensor([0.5, 0.5, 0.5])),
                  LossParams(group_size=3, sft_weight=0.0))
    assert out.losses.item() == pytest.approx(math.log(3) + math.log(2))  # Σ_k log(n − k + 1)
    assert out.metrics["ties"].tolist() == [1.0]
    out.losses.sum().backward()
    assert torch.all(logp.grad == 0)
    untied = pro(LossInputs(logp.detach(), torch.zeros(3, 1), mask, rewards=torch.tensor([0.5, 0.4, 0.5])),
                 LossParams(group_size=3))
    assert untied.metrics["ties"].tolist() == [0.0]


def test_dpo_matches_trl(tiny_model, tiny_tokenizer, tmp_path):
    """Same tiny model, same batch: lolkit's DPO loss and gradients equal TRL 1.16's DPOTrainer."""
    from transformers import AutoModelForCausalLM

    # prompts end in '?' or '.', responses start with a space-word: a clean token boundary, no truncation
    rows = [{"prompt": "What colour is a banana?", "chosen": " a banana is yellow.", "rejected": " i do not know."},
            {"prompt": "Name the colour of a frog.", "chosen": " a frog is green.", "rejected": " a frog is blue."},
            {"prompt": "Tell me the colour of a crow.", "chosen": " a crow is black.", "rejected": " white."}]
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model)
    policy = copy.deepcopy(ref)
    nudge(policy)
    assert_dpo_matches_trl(ref, policy, tiny_tokenizer, rows, tmp_path / "trl")


@pytest.mark.parametrize("algo, extra", [("dpo", []), ("dpo", ["--set", "algo.dpo_loss=ipo"]),
                                         ("dpo", ["--set", "algo.reference_free=true"]), ("pro", [])])
def test_preference_algorithms_train_from_the_cli(algo, extra, tmp_path, cli, tiny_model):
    rows = [{"prompt": f"What colour is a {o}?", "responses": [f"a {o} is {c}.", f"a {o} is blue.", "i do not know."],
             "rewards": [1.0, 0.4, 0.2]} for o, c in [("tomato", "red"), ("lime", "green"), ("crow", "black")] * 4]
    data = write_jsonl(tmp_path / "rank.jsonl", [{**r, "id": i} for i, r in enumerate(rows)])
    run = tmp_path / "run"
    res = cli("train", "--algo", algo, "--data", data, "--max-steps", "2", "--batch-size", "4", "--output-dir", run,
              "--set", "data.val_fraction=0", "--set", f"algo.cache_dir={tmp_path / 'c'}", "--quiet", *extra)
    assert res.code == 0, res
    from lolkit.io import read_json
    from lolkit.run import read_metrics

    m = read_metrics(run)
    assert len(m) == 2
    if algo == "dpo":
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(m[0])
        if not extra:  # policy == reference at step 1: Δ = 0
            assert m[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
        if "algo.dpo_loss=ipo" in extra:  # (0 − 1/(2β))² = 25
            assert m[0]["loss"] == pytest.approx(25.0, abs=1e-4)
        ref_info = read_json(run / "engine.json").get("reference")
        assert (ref_info is None) == ("algo.reference_free=true" in extra)
    assert read_json(run / "run.json")["units"] == 12
