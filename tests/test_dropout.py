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
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lolkit.data.tokenize import collate, encode_pair
    from lolkit.engine.reference import compute_reference
    from lolkit.logprobs import forward_logprobs
    from lolkit.losses import LossInputs, LossParams, dpo

    rows = PAIRS[:3]
    ref, tok, _ = load_model(ModelConfig(name=tiny_gpt2, disable_dropout=False), trainable=True)
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # move the policy away from the reference so Δ ≠ 0
        g = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    ours = copy.deepcopy(policy)
    disable_dropout(ours)
    cfg = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, use_cpu=True, bf16=False, report_to="none",
                    per_device_train_batch_size=3, gradient_checkpointing=False, max_length=None)
    assert cfg.disable_dropout
    trainer = DPOTrainer(model=policy, ref_model=copy.deepcopy(ref), args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    enc = [encode_pair(tok, r["prompt"], r[k], 512, 512) for k in ("chosen", "rejected") for r in rows]
    trl_rows = [tuple(ids[: sum(m)]) for ids, m in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                                                         strict=True)]
    ours_by_ids = {e.prompt_ids + e.response_ids: e for e in enc}
    assert set(trl_rows) == set(ours_by_ids)
    enc = [ours_by_ids[ids] for ids in trl_rows]
    ref_seq, _ = compute_reference(ref, enc, tok.pad_token_id, 8, disable_adapter=False)
    b = collate(enc, list(range(6)), tok.pad_token_id)
    ours.train()
    seq, toks, _ = forward_logprobs(ours, b)
    loss = dpo(LossInputs(seq, toks, b.response_mask, ref_logps=ref_seq), LossParams(beta=0.1)).losses.mean()
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(loss.item() - math.log(2)) > 1e-3
    trl_grads = dict(trainer.model.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, trl_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
