"""Stage 0 (IDM + world model) and stage 1 (behaviour-cloned policy) on the cached hidden states.

Stage 0 loss per batch (M = the valid transitions t → t + 1, K actions):
    a_t  = GumbelST(IDM(h)_{t+1})                                   (one-hot forward, soft gradient)
    NLL  = mean_M −log softmax(lm_head(WM(h_t, a_t)))[x_{t+1}]
    L0   = NLL + λ · (ln K − H(p̄)),   p̄ = mean_M softmax(IDM(h)_{t+1})
The entropy term pushes the *batch-average* action distribution towards uniform, so the IDM cannot
explain everything with a handful of codes (collapse); λ = ``entropy_weight``.

Stage 1 loss: cross-entropy of the policy's logits at t against the IDM's (noise-free, argmax) action
a_t, over M. Both stages run the same short loop (:func:`fit`): seeded shuffled epochs over the corpus,
AdamW, gradient clipping at 1.0, one metrics row per step.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import LolkitError
from ..tracking import loss_views
from .data import HiddenCache, hidden_cache, read_corpus
from .modules import (
    ColaConfig,
    InverseDynamics,
    LatentPolicy,
    WorldModel,
    codebook_perplexity,
    gumbel_straight_through,
    save_module,
    usage_entropy,
)
from .run import RUN_FORMAT, load_cola, policy_dir, read_run


@dataclass
class WorldOptions:
    output_dir: str
    model: str = "tiny"
    data: str = "builtin:colours"
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    entropy_weight: float = 0.1
    tau: float = 1.0
    max_len: int = 64
    seed: int = 0
    overwrite: bool = False
    sizes: dict = field(default_factory=dict)  # ColaConfig fields (num_actions, width, ...)


@dataclass
class BCOptions:
    run: str
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    overwrite: bool = False


def fit(params, step_loss: Callable[[list[int]], tuple[torch.Tensor, dict]], n_items: int, steps: int,
        batch_size: int, lr: float, seed: int, progress=None) -> list[dict]:
    """The training loop of both stages: ``step_loss(batch indices) → (loss, metrics)``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []
    rows = []
    for step in range(1, steps + 1):
        if len(order) < batch_size:  # a new shuffled epoch (the remainder of the last one goes first)
            fresh = list(range(n_items))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[:batch_size], order[batch_size:]
        t0 = time.perf_counter()
        loss, metrics = step_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tokens = float(metrics.pop("tokens"))  # the loss is a mean over the step's transitions
        rows.append({"step": step, "loss": float(loss.detach()),
                     **loss_views(float(loss.detach()) * tokens, len(idx), tokens),
                     **{k: float(v) for k, v in metrics.items()}, "step_time": time.perf_counter() - t0})
        if progress is not None:
            progress(step, rows[-1])
    return rows


def transitions(valid: torch.Tensor) -> torch.Tensor:
    """[B, T − 1]: transition t → t + 1 exists (both positions real; right padding)."""
    return valid[:, 1:] & valid[:, :-1]


@torch.no_grad()
def idm_actions(idm: InverseDynamics, cache: HiddenCache, pad_id: int, batch_size: int = 64) -> list[list[int]]:
    """The IDM's noise-free (argmax) action for every transition of every corpus sequence."""
    out = []
    for s in range(0, len(cache), batch_size):
        idx = list(range(s, min(s + batch_size, len(cache))))
        h, _, valid = cache.batch(idx, pad_id)
        a = idm(h, valid)[:, 1:].argmax(-1)
        m = transitions(valid)
        out += [a[r][m[r]].tolist() for r in range(len(idx))]
    return out


@torch.no_grad()
def world_nll(idm, world, lm_head, cache: HiddenCache, pad_id: int, batch_size: int = 32) -> tuple[float, float]:
    """(world-model NLL per token with the IDM's argmax actions, base LM NLL per token) over the corpus."""
    tot = tot_base = n = 0.0
    for s in range(0, len(cache), batch_size):
        idx = list(range(s, min(s + batch_size, len(cache))))
        h, ids, valid = cache.batch(idx, pad_id)
        m = transitions(valid)
        a = idm(h, valid)[:, 1:].argmax(-1)
        logits = world(h[:, :-1][m], a[m], lm_head)
        tot += float(F.cross_entropy(logits.float(), ids[:, 1:][m], reduction="sum"))
        tot_base += float(F.cross_entropy(lm_head(h[:, :-1][m]).float(), ids[:, 1:][m], reduction="sum"))
        n += float(m.sum())
    return tot / n, tot_base / n


def _progress(total: int, quiet: bool, label: str):
    from ..progress import TrainProgress

    p = TrainProgress(total, 0, disable=quiet, description=label)
    return p, p.update


def _write_stage(dest: Path, modules: dict, rows: list[dict], summary: dict) -> None:
    from ..io import atomic_path, write_json, write_jsonl

    with atomic_path(dest, is_dir=True, manifest=True) as tmp:
        for name, mod in modules.items():
            save_module(mod, tmp / f"{name}.safetensors")
        write_jsonl(tmp / "metrics.jsonl", rows)
        write_json(tmp / "summary.json", summary)


def _refuse_existing(dest: Path, overwrite: bool) -> None:
    """Before a stage writes ``dest`` (inside a CoLA run): refuse an existing one without --overwrite, a
    symbolic link, and a run folder that is not a CoLA run; tidy a killed stage's temporaries."""
    from ..io import recover_partial
    from ..run import refuse_to_remove

    run = dest.parent
    own = {"cola.json", "cache", "world", "policy_bc", "policy_rl", "eval"}
    foreign = sorted(p.name for p in run.iterdir() if p.name not in own and not p.name.startswith(".")) \
        if run.is_dir() and dest.name == "world" else []
    if foreign:
        raise LolkitError(f"{run}: holds files that are not a CoLA run's ({', '.join(foreign[:3])}); lolkit writes a "
                          "CoLA run only into a new or empty folder or an existing CoLA run: choose another --output-dir")
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise LolkitError(f"{dest}: exists; pass --overwrite to replace it")
        refuse_to_remove(dest, "CoLA stage directory")
    recover_partial(run, only=dest.name)


def _drop_downstream(run: Path, names: tuple[str, ...], log=None) -> None:
    """A replaced stage makes the later ones stale (a policy over another IDM's actions): remove them."""
    import shutil

    for name in names:
        p = run / name
        if p.is_symlink():
            p.unlink()  # a link the user made: remove the link, never what it points to
        elif p.exists():
            shutil.rmtree(p)
        else:
            continue
        if log:
            log(f"removed {p}: it was built on the replaced stage")


# --------------------------------------------------------------------------------------------------
# stage 0
# --------------------------------------------------------------------------------------------------
def train_world(opts: WorldOptions, quiet: bool = False, log=None) -> dict:
    from ..io import write_json
    from ..models import ModelConfig, load_model

    run = Path(opts.output_dir)
    _refuse_existing(run / "world", opts.overwrite)
    if opts.steps < 1 or opts.batch_size < 1:
        raise LolkitError("--steps and --batch-size must be at least 1")
    base, tok, path = load_model(ModelConfig(name=opts.model), trainable=False, device="cpu")
    try:
        cfg = ColaConfig(hidden_size=base.config.hidden_size, **opts.sizes)
    except TypeError as e:
        raise LolkitError(f"cola sizes: {e}") from None
    if cfg.width % cfg.heads:
        raise LolkitError(f"--width {cfg.width} must be a multiple of --heads {cfg.heads}")
    t0 = time.perf_counter()
    seqs = read_corpus(opts.data, tok, opts.max_len)
    cache = hidden_cache(run, base, _resolved(path), seqs, tok.pad_token_id, log=log)
    t_cache = time.perf_counter() - t0
    torch.manual_seed(opts.seed)
    idm, world = InverseDynamics(cfg), WorldModel(cfg)
    lm_head = base.get_output_embeddings()
    log_k = math.log(cfg.num_actions)
    nll0, base_nll = world_nll(idm, world, lm_head, cache, tok.pad_token_id)

    def step_loss(idx: list[int]):
        h, ids, valid = cache.batch(idx, tok.pad_token_id)
        m = transitions(valid)
        a_logits = idm(h, valid)[:, 1:][m]  # [M, K]: a_t explains x_{t+1}
        y = gumbel_straight_through(a_logits, opts.tau)
        logits = world(h[:, :-1][m], y, lm_head)
        nll = F.cross_entropy(logits.float(), ids[:, 1:][m])
        probs = torch.softmax(a_logits, -1)
        ent = usage_entropy(probs, torch.ones(a_logits.shape[0], dtype=torch.bool))
        cond = -(probs * torch.log_softmax(a_logits, -1)).sum(-1).mean()  # mean per-transition entropy
        counts = torch.bincount(y.argmax(-1), minlength=cfg.num_actions)
        return nll + opts.entropy_weight * (log_k - ent), {"tokens": m.sum(), "nll": nll.detach(),
                                                           "usage_entropy": ent.detach(),
                                                                  "action_entropy": cond.detach(),
                                                           "batch_perplexity": codebook_perplexity(counts)}

    params = list(idm.parameters()) + list(world.parameters())
    p, update = _progress(opts.steps, quiet, "cola world")
    t1 = time.perf_counter()
    with p:
        rows = fit(params, step_loss, len(cache), opts.steps, opts.batch_size, opts.lr, opts.seed, update)
    t_train = time.perf_counter() - t1
    idm.eval()
    world.eval()
    nll1, _ = world_nll(idm, world, lm_head, cache, tok.pad_token_id)
    actions = idm_actions(idm, cache, tok.pad_token_id)
    counts = torch.bincount(torch.tensor([a for s in actions for a in s]), minlength=cfg.num_actions)
    nexts = torch.bincount(torch.tensor([t for s in seqs for t in s[1:]]))
    summary = {"world_nll_initial": nll0, "world_nll_final": nll1, "base_nll": base_nll,
               "codebook_perplexity": codebook_perplexity(counts), "actions_used": int((counts > 0).sum()),
               "num_actions": cfg.num_actions, "next_token_unigram_perplexity": codebook_perplexity(nexts),
               "sequences": len(seqs), "transitions": int(counts.sum()), "cache_seconds": t_cache,
               "train_seconds": t_train, "steps": opts.steps}
    _write_stage(run / "world", {"idm": idm, "world_model": world}, rows, summary)
    _drop_downstream(run, ("policy_bc", "policy_rl", "eval"), log)
    write_json(run / "cola.json", {"format": RUN_FORMAT, "model": opts.model, "data": opts.data, "max_len": opts.max_len,
                                   "config": cfg.to_json(), "world": {k: v for k, v in opts.__dict__.items()
                                                                      if k not in ("sizes", "overwrite")}})
    return summary


def _resolved(path: str) -> str:
    from ..models import resolve_model

    return resolve_model(path)


# --------------------------------------------------------------------------------------------------
# stage 1
# --------------------------------------------------------------------------------------------------
def train_bc(opts: BCOptions, quiet: bool = False, log=None) -> dict:
    dest = policy_dir(opts.run, "bc")
    _refuse_existing(dest, opts.overwrite)
    info = read_run(opts.run)
    cola = load_cola(opts.run)
    tok, cfg = cola.tokenizer, cola.config
    seqs = read_corpus(info["data"], tok, info["max_len"])
    cache = hidden_cache(Path(opts.run), cola.base, _resolved(info["model"]), seqs, tok.pad_token_id, log=log)
    labels = idm_actions(cola.idm, cache, tok.pad_token_id)
    torch.manual_seed(opts.seed)
    policy = LatentPolicy(cfg)

    def step_loss(idx: list[int]):
        h, _, valid = cache.batch(idx, tok.pad_token_id)
        m = transitions(valid)
        logits = policy(h, valid)[:, :-1][m]
        target = torch.tensor([a for i in idx for a in labels[i]])
        loss = F.cross_entropy(logits, target)
        return loss, {"tokens": m.sum(), "accuracy": (logits.argmax(-1) == target).float().mean()}

    p, update = _progress(opts.steps, quiet, "cola bc")
    t1 = time.perf_counter()
    with p:
        rows = fit(list(policy.parameters()), step_loss, len(cache), opts.steps, opts.batch_size, opts.lr,
                   opts.seed, update)
    policy.eval()
    with torch.no_grad():  # accuracy and cross-entropy over the whole corpus
        ce = correct = n = 0.0
        for s in range(0, len(cache), 64):
            idx = list(range(s, min(s + 64, len(cache))))
            h, _, valid = cache.batch(idx, tok.pad_token_id)
            m = transitions(valid)
            logits = policy(h, valid)[:, :-1][m]
            target = torch.tensor([a for i in idx for a in labels[i]])
            ce += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += float((logits.argmax(-1) == target).sum())
            n += len(target)
    summary = {"bc_loss_initial": rows[0]["loss"], "bc_loss_final": ce / n, "bc_accuracy": correct / n,
               "train_seconds": time.perf_counter() - t1, "steps": opts.steps}
    _write_stage(dest, {"policy": policy}, rows, summary)
    _drop_downstream(Path(opts.run), ("policy_rl", "eval"), log)
    return summary
