"""TRL 1.16's trainers and lolkit on the same batch: the DPO parity check the preference and dropout tests share, and
the pieces the reward-model parity test shares with it (TRL's row order, the loss and gradient comparison)."""

from __future__ import annotations

import copy
import math

import pytest
import torch


def nudge(model, seed: int = 1, scale: float = 0.05) -> None:
    """Move a copy of the reference away from it (Δ ≠ 0, so the loss is not log 2 by construction)."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def trl_rows(batch) -> list[tuple[int, ...]]:
    """The token ids of each row of a TRL batch, without its padding (TRL's sampler shuffles the pairs: a test
    puts its own rows in this order)."""
    return [tuple(ids[: sum(m)]) for ids, m in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
                                                    strict=True)]


def assert_same_loss_and_gradients(loss, trl_loss, ours, trl_model) -> None:
    """Backpropagates ``loss``: the same value as TRL's to 1e-5 (and not log 2: a non-trivial batch), and every
    parameter's gradient as TRL's."""
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(loss.item() - math.log(2)) > 1e-3
    theirs = dict(trl_model.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def assert_dpo_matches_trl(ref, policy, tok, rows: list[dict], out_dir, *, prepare=None, train: bool = False):
    """One batch of ``rows`` (prompt / chosen / rejected) through TRL's DPOTrainer (``policy``, a copy of ``ref``)
    and through lolkit (a copy of ``policy``, given to ``prepare`` first; both in training mode when ``train``):
    the same loss to 1e-5, not log 2, and the same gradients. Returns TRL's DPOConfig."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lolkit.data.tokenize import collate, encode_pair
    from lolkit.engine.reference import compute_reference
    from lolkit.logprobs import forward_logprobs
    from lolkit.losses import LossInputs, LossParams, dpo

    ours = copy.deepcopy(policy)
    if prepare is not None:
        prepare(ours)
    cfg = DPOConfig(output_dir=str(out_dir), beta=0.1, use_cpu=True, bf16=False, report_to="none",
                    per_device_train_batch_size=len(rows), gradient_checkpointing=False, max_length=None)
    trainer = DPOTrainer(model=policy, ref_model=copy.deepcopy(ref), args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    if train:
        trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    enc = [encode_pair(tok, r["prompt"], r[k], 512, 512) for k in ("chosen", "rejected") for r in rows]
    # the same token ids as TRL (prompt + completion + EOS), rows chosen-first; TRL's sampler shuffles the pairs,
    # so put ours in its order
    order = trl_rows(batch)
    ours_by_ids = {e.prompt_ids + e.response_ids: e for e in enc}
    assert set(order) == set(ours_by_ids)
    enc = [ours_by_ids[ids] for ids in order]
    ref_seq, _ = compute_reference(ref, enc, tok.pad_token_id, 8, disable_adapter=False)
    b = collate(enc, list(range(len(enc))), tok.pad_token_id)
    if train:
        ours.train()
    seq, toks, _ = forward_logprobs(ours, b)
    loss = dpo(LossInputs(seq, toks, b.response_mask, ref_logps=ref_seq), LossParams(beta=0.1)).losses.mean()
    assert_same_loss_and_gradients(loss, trl_loss, ours, trainer.model)
    return cfg
