"""The offline-advantage engine: reference log-probs, value estimate, advantages and the training
pool, all computed once before training and cached on disk with a fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..distributed import Dist
from ..errors import LolkitError
from ..io import write_json


@dataclass
class Engine:
    """What the training step reads (by example index); never recomputed during training."""

    pool: list[int]
    weights: list[float] | None
    ref_seq: torch.Tensor | None = None
    reference: object | None = None  # ReferenceScores
    advantages: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def cache_root(cfg) -> Path:
    from ..models import cache_dir

    return Path(cfg.algo.cache_dir) if cfg.algo.cache_dir else cache_dir() / "engine"


def max_reward(cfg, rewards: list[float]) -> float:
    if cfg.algo.max_reward is not None:
        return float(cfg.algo.max_reward)
    if cfg.reward:
        from ..rewards import get_reward

        top = get_reward(cfg.reward).max_value
        if top is not None:  # None: a component's range is unknown (raw logit, …): use the data's maximum
            return top
    top = max(rewards)
    if top <= 0:
        raise LolkitError("the value head predicts in (0, max_reward) and every reward is <= 0; "
                          "set algo.max_reward or shift the rewards (data.shift_rewards=true)")
    return top


def prepare_engine(cfg, algo, model, tokenizer, data, model_path: str, *, fresh_adapter: bool, log, run: Path,
                   dist: Dist | None = None) -> Engine:
    """Reference pass (sharded across processes), value estimate and advantages (main process
    computes, the others read the cache), and the pool for ``algo``."""
    dist = dist or Dist()
    is_main, wait = dist.is_main, dist.wait
    from .fingerprint import digest, model_digest
    from .sampling import build_pool

    n = len(data.examples)
    rewards = [e.reward for e in data.examples]
    needs_adv = algo.needs_advantage or cfg.algo.sampling in ("good_random", "all_priority")
    needs_ref = algo.needs_reference and not (algo.unit == "pair" and cfg.algo.reference_free)
    engine_info: dict = {}
    ref = adv = None
    if needs_ref or needs_adv:
        from .reference import load_or_compute, reference_key

        root = cache_root(cfg)
        mdig = model_digest(model_path)
        dtype = str(next(model.parameters()).dtype)
        if needs_ref:
            key = reference_key(mdig, [e.encoded for e in data.examples], dtype, fresh_adapter)
            ref = load_or_compute(root, key, model, [e.encoded for e in data.examples], tokenizer.pad_token_id,
                                  cfg.micro_batch_size, tokens=algo.token_reference, disable_adapter=fresh_adapter,
                                  dist=dist)
            engine_info["reference"] = {"key": ref.key, "cached": ref.cached, "seconds": round(ref.seconds, 3),
                                        "examples": n}
            log(f"reference pass: {'cached' if ref.cached else f'computed in {ref.seconds:.1f} s'} "
                f"({n} responses, key {ref.key[:12]})")
        if needs_adv:
            from .advantage import advantage_stats, estimate_advantages

            if any(r is None for r in rewards):
                raise LolkitError(f"{data.source}: advantages need a reward on every response")
            source = cfg.algo.value_source
            mv = max_reward(cfg, rewards)
            akey = digest({"model": mdig, "dtype": dtype, "prompts": [e.prompt for e in data.examples],
                           "rewards": rewards, "val": data.val_prompts, "reward": cfg.reward, "source": source,
                           "max_value": mv, "seed": cfg.seed, "mpl": cfg.data.max_prompt_len,
                           "eval": vars(cfg.eval), "algo": {k: getattr(cfg.algo, k) for k in (
                               "value_epochs", "value_lr", "value_batch_size", "value_holdout", "value_folds")},
                           "fresh_adapter": fresh_adapter, "version": 2})
            for turn in ("main", "others"):
                if (turn == "main") == is_main:
                    adv = estimate_advantages(source=source, model=model, tokenizer=tokenizer, data=data,
                                              rewards=rewards, algo_cfg=cfg.algo, reward_name=cfg.reward, max_value=mv,
                                              cfg=cfg, key=akey, cache_root=root, disable_adapter=fresh_adapter,
                                              log=log)
                wait()
            stats = advantage_stats(adv.advantages)
            engine_info["value"] = {**adv.info, "cached": adv.cached}
            if is_main:
                write_json(run / "advantage_stats.json", {**stats, "value_source": source,
                                                          "value_mean": float(adv.values.mean())})
            dropped = stats["dropped"] if algo.needs_advantage else 0
            log(f"advantages ({source} value, {'cached' if adv.cached else 'computed'}): mean {stats['mean']:.3f}, "
                f"{stats['kept']}/{n} positive" + (f", {dropped} dropped from the pool" if dropped else ""))
    if algo.unit in ("pair", "pairs", "ranking"):  # DPO / rm / PRO: every unit, plain epochs
        pool, weights = list(range(len(data.units))), None
    else:  # one example per unit, in example order
        advantages = adv.advantages.tolist() if adv is not None else None
        pool, weights = build_pool(n, advantages, rewards if algo.needs_reward else None, cfg.algo.sampling,
                                   drop_nonpositive=algo.needs_advantage)
    engine_info["pool"] = {"size": len(pool), "examples": n, "sampling": cfg.algo.sampling}
    if is_main:
        write_json(run / "engine.json", engine_info)
    return Engine(pool, weights, ref.seq_logps if ref is not None else None, ref,
                  adv.advantages if adv is not None else None, engine_info)
