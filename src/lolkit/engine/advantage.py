"""Advantages A(x, y) = R(x, y) − V(x) for the A-LoL family (spec §1), computed once and cached.

Two sources of V(x):

* ``reference`` (the paper's): the reference policy answers each validation prompt greedily, the
  task reward scores the answers, and a value head over the frozen reference's prompt hidden states
  learns to predict those rewards; V(x) of a training prompt is the head's prediction.
* ``data`` (no reward function needed at training time): the same head is fitted on the training
  responses' own rewards with K-fold cross-fitting, grouped by prompt, so no example's value comes
  from a head that saw that example (or another response to the same prompt).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import LolkitError
from ..io import write_json
from .cache import read_entry, write_entry
from .value import cross_fit_values, fit_value_head, predict_values


@dataclass
class Advantages:
    values: torch.Tensor  # [N] V(x) per example
    advantages: torch.Tensor  # [N] R − V
    cached: bool
    info: dict


@torch.no_grad()
def prompt_features(model, tokenizer, prompts: list[str], max_prompt_len: int, batch_size: int = 16,
                    disable_adapter: bool = False) -> list[torch.Tensor]:
    """Final-layer hidden states [P_i, H] of each prompt's tokens under the reference policy; for an
    encoder–decoder model, the encoder's (the prompt is its input; the decoder runs one start token)."""
    from ..data.tokenize import encode_prompt
    from ..models import is_seq2seq
    from .reference import reference_context

    device = next(model.parameters()).device
    start = None
    if is_seq2seq(model):
        from ..logprobs import decoder_start_id

        start = decoder_start_id(model)
    enc = [encode_prompt(tokenizer, p, max_prompt_len) for p in prompts]
    out: list[torch.Tensor | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    was = model.training
    model.eval()
    try:
        with reference_context(model, disable_adapter):
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                width = max(len(enc[i]) for i in idx)
                ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
                attn = torch.zeros_like(ids)
                for b, i in enumerate(idx):
                    ids[b, : len(enc[i])] = torch.tensor(enc[i])
                    attn[b, : len(enc[i])] = 1
                if start is None:
                    res = model(input_ids=ids.to(device), attention_mask=attn.to(device), output_hidden_states=True,
                                use_cache=False)
                    hidden = res.hidden_states[-1].float().cpu()
                else:
                    res = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False,
                                decoder_input_ids=torch.full((len(idx), 1), start, dtype=torch.long, device=device))
                    hidden = res.encoder_last_hidden_state.float().cpu()
                for b, i in enumerate(idx):
                    out[i] = hidden[b, : len(enc[i])].clone()
    finally:
        model.train(was)
    return out  # type: ignore[return-value]


def advantage_stats(adv: torch.Tensor) -> dict:
    vals = adv.tolist()
    kept = sum(1 for a in vals if a > 0)
    qs = statistics.quantiles(vals, n=10, method="inclusive") if len(vals) > 1 else [vals[0]] * 9
    return {"count": len(vals), "kept": kept, "kept_fraction": kept / len(vals), "dropped": len(vals) - kept,
            "mean": statistics.fmean(vals), "median": statistics.median(vals),
            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "min": min(vals), "max": max(vals),
            "p10": qs[0], "p90": qs[-1]}


def estimate_advantages(*, source: str, model, tokenizer, data, rewards: list[float], algo_cfg, reward_name: str | None,
                        max_value: float, cfg, key: str, cache_root: Path, disable_adapter: bool, log) -> Advantages:
    """Values and advantages for every training example (cached under ``cache_root/adv-<key>``)."""
    folder = cache_root / f"adv-{key[:24]}"
    meta = read_entry(folder)
    if meta is not None and meta.get("key") == key and meta.get("count") == len(rewards):
        t = load_file(folder / "values.safetensors")
        return Advantages(t["values"], t["advantages"], True, meta["info"])
    start = time.perf_counter()
    prompts = [e.prompt for e in data.examples]
    unique = list(dict.fromkeys(prompts))
    pid = {p: k for k, p in enumerate(unique)}
    groups = [pid[p] for p in prompts]
    fit = {"epochs": algo_cfg.value_epochs, "lr": algo_cfg.value_lr, "batch_size": algo_cfg.value_batch_size}
    info: dict = {"source": source, "max_value": max_value, **fit}
    mpl = cfg.data.max_prompt_len
    if source == "reference":
        if not reward_name:
            raise LolkitError("--value-source reference needs a reward to score the reference policy's answers "
                              "(--reward NAME); without one use --value-source data")
        if len(data.val_prompts) < 2:
            raise LolkitError(f"--value-source reference needs at least 2 validation prompts to fit the value head, "
                              f"found {len(data.val_prompts)}: pass --val-data FILE (records or prompts), raise "
                              "--set data.val_fraction=F, or use --value-source data")
        from ..evaluate import score_prompts
        from .reference import reference_context

        log(f"value: reference policy answers {len(data.val_prompts)} validation prompts")
        with reference_context(model, disable_adapter):
            rows = score_prompts(model, tokenizer, data.val_prompts, data.val_raw_prompts, reward_name, cfg, sample=False,
                                 records=data.val_unique)
        targets = [r["reward"] for r in rows]
        feats = prompt_features(model, tokenizer, data.val_prompts, mpl, disable_adapter=disable_adapter)
        head, hist = fit_value_head(feats, targets, max_value, seed=cfg.seed, holdout=algo_cfg.value_holdout, **fit)
        train_feats = prompt_features(model, tokenizer, unique, mpl, disable_adapter=disable_adapter)
        per_prompt = predict_values(head, train_feats)
        values = per_prompt[torch.tensor(groups)]
        info.update({"val_prompts": len(targets), "reference_val_reward": statistics.fmean(targets),
                     "best_epoch": hist["best_epoch"], "initial_val_mse": hist.get("initial_val_mse"),
                     "val_mse": hist["val_mse"], "train_mse": hist["train_mse"]})
    elif source == "data":
        feats = prompt_features(model, tokenizer, unique, mpl, disable_adapter=disable_adapter)
        k = min(algo_cfg.value_folds, len(unique))
        if k < 2:
            raise LolkitError("--value-source data needs at least 2 distinct training prompts for cross-fitting")
        values = cross_fit_values([feats[g] for g in groups], rewards, max_value, k=k, groups=groups, seed=cfg.seed,
                                  holdout=algo_cfg.value_holdout, **fit)
        info.update({"folds": k})
    else:
        raise LolkitError(f"unknown value source {source!r} (reference, data)")
    values = values.float()
    adv = torch.tensor(rewards, dtype=torch.float32) - values
    info["seconds"] = time.perf_counter() - start

    def build(tmp: Path) -> None:
        save_file({"values": values.contiguous(), "advantages": adv.contiguous()}, tmp / "values.safetensors")
        write_json(tmp / "meta.json", {"key": key, "count": len(rewards), "info": info})

    if not write_entry(folder, build):  # another run published the same entry first: use that copy
        t = load_file(folder / "values.safetensors")
        values, adv = t["values"], t["advantages"]
    return Advantages(values, adv, False, info)
