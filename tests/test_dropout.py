"""Dropout is off in every forward pass that feeds a loss (model.disable_dropout, default true, as TRL's
disable_dropout): checked on a tiny GPT-2 with dropout 0.1, where a forgotten switch shows at step 1 —
DPO's loss is exactly log 2 and its margin 0 when policy == reference, A-LoL's ratio is exactly 1 — and
DPO equals TRL 1.16's DPOTrainer (which switches dropout off too) on that model in training mode."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lolkit.models import ModelConfig, disable_dropout, load_model

from .conftest import read_jsonl, write_jsonl
from .trl_parity import assert_dpo_matches_trl, nudge

PAIRS = [{"prompt": "What colour is a banana?", "chosen": " a banana is yellow.", "rejected": " i do not know."},
         {"prompt": "Name the colour of a frog.", "chosen": " a frog is green.", "rejected": " a frog is blue."},
         {"prompt": "Tell me the colour of a crow.", "chosen": " a crow is black.", "rejected": " white."},
         {"prompt": "What colour is a lime?", "chosen": " a lime is green.", "rejected": " a lime is red."}]


def _logits_twice(model) -> tuple[torch.Tensor, torch.Tensor]:
    model.train()
    ids = torch.arange(3, 23).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits, model(input_ids=ids).logits


def test_training_mode_forward_is_deterministic_only_with_dropout_off(tiny_gpt2):
    on, _, _ = load_model(ModelConfig(name=tiny_gpt2, disable_dropout=False), trainable=True)
    a, b = _logits_twice(on)
    assert not torch.equal(a, b)  # the model really has dropout: two training-mode passes differ
    off, _, _ = load_model(ModelConfig(name=tiny_gpt2), trainable=True)
    a, b = _logits_twice(off)
    assert torch.equal(a, b)
    off.eval()
    with torch.no_grad():
        torch.testing.assert_close(a, off(input_ids=torch.arange(3, 23).unsqueeze(0)).logits, rtol=0, atol=0)
    # the saved config keeps its dropout: whoever trains the model next decides for themselves
    assert off.config.resid_pdrop == 0.1 and off.config.attn_pdrop == 0.1
    # Llama-style attention keeps its rate as a float read in training mode only
    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_dropout = 0.1
            self.drop = torch.nn.Dropout(0.2)

    m = Attn()
    assert disable_dropout(m) == 2 and m.attention_dropout == 0.0 and m.drop.p == 0.0


def test_lora_adapter_dropout_is_off_too(tiny_gpt2):
    model, _, _ = load_model(ModelConfig(name=tiny_gpt2, lora=True, lora_dropout=0.3), trainable=True)
    drops = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
    assert drops and all(m.p == 0.0 for m in drops)


def test_dpo_first_step_is_log2_with_zero_margin_on_a_dropout_model(tiny_gpt2, tmp_path, cli):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{**r, "id": i} for i, r in enumerate(PAIRS * 2)])
    run = tmp_path / "dpo"
    res = cli("train", "--algo", "dpo", "--model", tiny_gpt2, "--data", data, "--max-steps", "1", "--batch-size", "8",
              "--lr", "1e-3", "--output-dir", run, "--quiet", "--set", "data.val_fraction=0",
              "--set", f"algo.cache_dir={tmp_path / 'cache'}")
    assert res.code == 0, res
    row = read_jsonl(run / "metrics.jsonl")[0]
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert row["rewards/margins"] == pytest.approx(0.0, abs=1e-7)
    assert row["rewards/chosen"] == pytest.approx(0.0, abs=1e-7)


def test_a_lol_ratio_is_one_at_the_first_step_on_a_dropout_model(tiny_gpt2, tmp_path, cli):
    rows = [{"id": i, "prompt": r["prompt"], "response": r[k], "reward": 1.0 if k == "chosen" else 0.0}
            for i, (r, k) in enumerate((r, k) for r in PAIRS * 2 for k in ("chosen", "rejected"))]
    data = write_jsonl(tmp_path / "scored.jsonl", rows)
    run = tmp_path / "alol"
    res = cli("train", "--algo", "a_lol", "--model", tiny_gpt2, "--data", data, "--max-steps", "1", "--batch-size", "4",
              "--lr", "1e-3", "--value-source", "data", "--output-dir", run, "--quiet", "--set", "data.val_fraction=0",
              "--set", "algo.value_folds=2", "--set", f"algo.cache_dir={tmp_path / 'cache'}")
    assert res.code == 0, res
    row = read_jsonl(run / "metrics.jsonl")[0]
    # equal up to float32 summation order (the reference pass batches the rows differently); 0.856 with dropout on
    assert row["ratio"] == pytest.approx(1.0, abs=1e-5) and row["log_ratio"] == pytest.approx(0.0, abs=1e-5)


def test_dpo_matches_trl_on_a_dropout_model_in_training_mode(tiny_gpt2, tmp_path):
    """lolkit's load path and TRL 1.16's DPOTrainer both switch dropout off: same loss and gradients on a
    model with dropout 0.1, both in training mode."""
    ref, tok, _ = load_model(ModelConfig(name=tiny_gpt2, disable_dropout=False), trainable=True)
    policy = copy.deepcopy(ref)
    nudge(policy)
    cfg = assert_dpo_matches_trl(ref, policy, tok, PAIRS[:3], tmp_path / "trl", prepare=disable_dropout, train=True)
    assert cfg.disable_dropout
