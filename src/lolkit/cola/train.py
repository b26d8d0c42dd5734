"""Stage 0 (IDM + world model) and stage 1 (behaviour-cloned policy) on the cached hidden states.

Stage 0 loss per batch (M = the valid transitions t → t + 1, K actions):
    a_t  = GumbelST(IDM(h)_{t+1})                                   (one-hot forward, soft gradient)
    NLL  = mean_M −log softmax(lm_head(WM(h_t, a_t)))[x_{t+1}]
    L0   = NLL + λ · (ln K − H(p̄)),   p̄ = mean_M softmax(IDM(h)_{t+1})
The entropy term pushes the *batch-average* action distribution towards uniform, so the IDM cannot
explain everything with a handful of codes (collapse); λ = ``entropy_weight``.

Stage 1 loss: cross-entropy of the policy's logits at t against the IDM's (noise-free, argmax) action
a_t, over M. Both stages run the same short loop (:func:`fit`) inside the run lifecycle every loop shares
(:mod:`lolkit.run`): seeded shuffled epochs over the corpus (the order is part of each checkpoint, so a
stage resumes mid-way exactly), AdamW, gradient clipping at 1.0, one metrics row per step, validation
(world-model NLL / BC cross-entropy on ``--val-data``, else on the corpus) with a best checkpoint.
Each stage is a run directory of its own inside the CoLA run: ``world/``, ``policy_bc/``, ``policy_rl/``.
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

from ..checkpoint import ModuleWeights
from ..config import DEFAULT_LR, OptimConfig
from ..errors import LolkitError
from ..logprobs import head_logprobs
from ..run import Run, make_optimizer
from ..tracking import loss_views
from ..validation import MeasureValidator
from .data import HiddenCache, hidden_cache, read_corpus
from .modules import (
    ColaConfig,
    InverseDynamics,
    LatentPolicy,
    WorldModel,
    codebook_perplexity,
    gumbel_straight_through,
    usage_entropy,
)
from .run import RUN_FORMAT, load_cola, policy_dir, read_run


@dataclass(kw_only=True)
class StageOptions:
    """What every CoLA stage shares: the run lifecycle's settings (:mod:`lolkit.run`)."""

    seed: int = 0
    lr: float | None = None  # None: config.DEFAULT_LR of the stage
    save_every: int = 50  # steps between checkpoints (0: only at the end)
    eval_every: int = 0  # steps between validations (0: only at the end)
    save_total_limit: int = 2
    report_to: list[str] = field(default_factory=list)
    resume: bool = False
    overwrite: bool = False


@dataclass
class WorldOptions(StageOptions):
    output_dir: str
    model: str = "tiny"
    data: str = "builtin:colours"
    val_data: str | None = None  # validation corpus; default: the corpus itself
    steps: int = 300
    batch_size: int = 16
    entropy_weight: float = 0.1
    tau: float = 1.0
    max_len: int = 64
    sizes: dict = field(default_factory=dict)  # ColaConfig fields (num_actions, width, ...)


@dataclass
class BCOptions(StageOptions):
    run: str
    val_data: str | None = None  # validation corpus; default: the run's corpus
    steps: int = 300
    batch_size: int = 16


FLAGS = ("resume", "overwrite")  # how a stage is started, not what it is


def stage_settings(algo: str, model: str, opts) -> dict:
    """``config.yaml`` of a stage: the row of lolkit.algorithms it runs, the base model and its options."""
    options = {k: v for k, v in opts.__dict__.items() if k not in FLAGS}
    return {"algo": {"name": algo}, "model": {"name": model}, "cola": options}


def stage_run(path: Path, algo: str, model: str, opts, quiet: bool) -> Run:
    """The run lifecycle of a stage: checks its directory now (nothing is written until ``create``)."""
    from ..tracking import check_trackers

    if opts.lr is None:
        opts.lr = DEFAULT_LR[algo][0]
    if not (math.isfinite(opts.lr) and opts.lr > 0) or opts.save_every < 0 or opts.eval_every < 0:
        raise LolkitError("--lr must be > 0, --save-every and --eval-every >= 0")
    check_trackers(opts.report_to)
    return Run(path, stage_settings(algo, model, opts), resume=opts.resume, overwrite=opts.overwrite, quiet=quiet,
               save_every=opts.save_every, eval_every=opts.eval_every, keep=max(1, opts.save_total_limit))


class BatchOrder:
    """Seeded shuffled epochs over ``n`` items, ``size`` per step (the remainder of an epoch goes first);
    a checkpoint part, so a resumed stage draws the batches an uninterrupted one would."""

    def __init__(self, n: int, size: int, seed: int):
        self.n, self.size = n, size
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        if len(self.order) < self.size:
            fresh = list(range(self.n))
            self.rng.shuffle(fresh)
            self.order += fresh
        idx, self.order = self.order[: self.size], self.order[self.size :]
        return idx

    def state_dict(self) -> dict:
        version, state, gauss = self.rng.getstate()
        return {"rng": [version, list(state), gauss], "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order = list(state["order"])


def fit(run: Run, modules: dict, step_loss: Callable[[list[int]], tuple[torch.Tensor, dict]], n_items: int,
        opts, validator: MeasureValidator, state: dict, description: str) -> list[dict]:
    """The training loop of both stages, inside the run lifecycle: ``step_loss(batch indices) → (loss,
    metrics)``; returns the metrics rows of the whole stage (those of a resumed run's earlier steps
    included)."""
    from ..run import read_metrics

    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = make_optimizer(OptimConfig(lr=opts.lr, weight_decay=0.0), params)
    order = BatchOrder(n_items, opts.batch_size, opts.seed)
    weights, parts = ModuleWeights(modules), {"order": order}
    start = run.restore(weights, optimizer, None, parts)
    state.update({k: v for k, v in run.state.items() if k in state})  # values measured before a resumed run's start
    run.write_info({"algo": run.settings["algo"]["name"], "steps": opts.steps, "sequences": n_items,
                    "parameters": sum(p.numel() for p in params)})
    with run.logging(opts.steps, opts.report_to, description=description):
        for step in range(start + 1, opts.steps + 1):
            idx = order.next()
            t0 = time.perf_counter()
            loss, metrics = step_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            tokens = float(metrics.pop("tokens"))  # the loss is a mean over the step's transitions
            row = {"step": step, "loss": float(loss.detach()),
                   **loss_views(float(loss.detach()) * tokens, len(idx), tokens),
                   **{k: float(v) for k, v in metrics.items()}, "step_time": time.perf_counter() - t0}
            row.update(run.validate(step, validator, weights))
            run.log(row)
            run.checkpoint(step, weights, optimizer, None, parts, state=state, metric=validator.metric)
    return read_metrics(run.path)


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
    """(world-model NLL per token with the IDM's argmax actions, base LM NLL per token) over the corpus; the
    frozen LM head runs on the transition rows only, in chunks (:func:`lolkit.logprobs.head_logprobs`)."""
    tot = tot_base = n = 0.0
    for s in range(0, len(cache), batch_size):
        idx = list(range(s, min(s + batch_size, len(cache))))
        h, ids, valid = cache.batch(idx, pad_id)
        m = transitions(valid)
        a = idm(h, valid)[:, 1:].argmax(-1)
        targets = ids[:, 1:][m]
        tot -= float(head_logprobs(world.merge(h[:, :-1][m], a[m]), lm_head, targets).sum())
        tot_base -= float(head_logprobs(h[:, :-1][m], lm_head, targets).sum())
        n += float(m.sum())
    return tot / n, tot_base / n


def refuse_foreign(run: Path) -> None:
    """A CoLA run folder holds only CoLA's files: refuse to start stage 0 in a folder with others."""
    own = {"cola.json", "cache", "world", "policy_bc", "policy_rl", "eval"}
    foreign = sorted(p.name for p in run.iterdir() if p.name not in own and not p.name.startswith(".")) \
        if run.is_dir() else []
    if foreign:
        raise LolkitError(f"{run}: holds files that are not a CoLA run's ({', '.join(foreign[:3])}); lolkit writes a "
                          "CoLA run only into a new or empty folder or an existing CoLA run: choose another --output-dir")


def drop_downstream(run: Path, names: tuple[str, ...], log=None) -> None:
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

    root = Path(opts.output_dir)
    refuse_foreign(root)
    if opts.steps < 1 or opts.batch_size < 1:
        raise LolkitError("--steps and --batch-size must be at least 1")
    with stage_run(root / "world", "cola_world", opts.model, opts, quiet) as run:
        log = log or run.say
        base, tok, path = load_model(ModelConfig(name=opts.model), trainable=False, device="cpu")
        try:
            cfg = ColaConfig(hidden_size=base.config.hidden_size, **opts.sizes)
        except TypeError as e:
            raise LolkitError(f"cola sizes: {e}") from None
        if cfg.width % cfg.heads:
            raise LolkitError(f"--width {cfg.width} must be a multiple of --heads {cfg.heads}")
        t0 = time.perf_counter()
        seqs = read_corpus(opts.data, tok, opts.max_len)
        val_seqs = read_corpus(opts.val_data, tok, opts.max_len) if opts.val_data else None
        cache = hidden_cache(root, base, _resolved(path), seqs, tok.pad_token_id, log=log, dist=run.dist)
        val_cache = hidden_cache(root, base, _resolved(path), val_seqs, tok.pad_token_id, log=log,
                                 dist=run.dist) if val_seqs else cache
        t_cache = time.perf_counter() - t0
        torch.manual_seed(opts.seed)
        idm, world = InverseDynamics(cfg), WorldModel(cfg)
        lm_head = base.get_output_embeddings()
        log_k = math.log(cfg.num_actions)
        run.create()
        nll0, base_nll = world_nll(idm, world, lm_head, cache, tok.pad_token_id)
        state = {"world_nll_initial": nll0, "base_nll": base_nll}

        def step_loss(idx: list[int]):
            h, ids, valid = cache.batch(idx, tok.pad_token_id)
            m = transitions(valid)
            a_logits = idm(h, valid)[:, 1:][m]  # [M, K]: a_t explains x_{t+1}
            y = gumbel_straight_through(a_logits, opts.tau)
            # the next-token NLL through the frozen LM head, on the transition rows only, in chunks
            nll = -head_logprobs(world.merge(h[:, :-1][m], y), lm_head, ids[:, 1:][m]).mean()
            probs = torch.softmax(a_logits, -1)
            ent = usage_entropy(probs, torch.ones(a_logits.shape[0], dtype=torch.bool))
            cond = -(probs * torch.log_softmax(a_logits, -1)).sum(-1).mean()  # mean per-transition entropy
            counts = torch.bincount(y.argmax(-1), minlength=cfg.num_actions)
            return nll + opts.entropy_weight * (log_k - ent), {"tokens": m.sum(), "nll": nll.detach(),
                                                               "usage_entropy": ent.detach(),
                                                               "action_entropy": cond.detach(),
                                                               "batch_perplexity": codebook_perplexity(counts)}

        validator = MeasureValidator("val_nll", lambda: {"val_nll": world_nll(idm, world, lm_head, val_cache,
                                                                             tok.pad_token_id)[0]})
        t1 = time.perf_counter()
        rows = fit(run, {"idm": idm, "world_model": world}, step_loss, len(cache), opts, validator, state, "cola world")
        t_train = time.perf_counter() - t1
        idm.eval()
        world.eval()
        # the last step's validation measured the final modules: on the corpus itself unless --val-data
        nll1 = rows[-1]["val_nll"] if val_seqs is None else world_nll(idm, world, lm_head, cache, tok.pad_token_id)[0]
        actions = idm_actions(idm, cache, tok.pad_token_id)
        counts = torch.bincount(torch.tensor([a for s in actions for a in s]), minlength=cfg.num_actions)
        nexts = torch.bincount(torch.tensor([t for s in seqs for t in s[1:]]))
        summary = {"world_nll_initial": state["world_nll_initial"], "world_nll_final": nll1, "base_nll": state["base_nll"],
                   "codebook_perplexity": codebook_perplexity(counts), "actions_used": int((counts > 0).sum()),
                   "num_actions": cfg.num_actions, "next_token_unigram_perplexity": codebook_perplexity(nexts),
                   "sequences": len(seqs), "transitions": int(counts.sum()), "cache_seconds": t_cache,
                   "train_seconds": t_train, "steps": opts.steps}
        run.finish(ModuleWeights({"idm": idm, "world_model": world}))
        if run.main:
            write_json(run.path / "summary.json", summary)
    if run.main:
        drop_downstream(root, ("policy_bc", "policy_rl", "eval"), log)
        write_cola_json(root, opts, cfg)
    run.dist.wait()  # a next stage in the same process group reads cola.json
    return summary


def write_cola_json(root: Path, opts: WorldOptions, cfg: ColaConfig) -> None:
    """The CoLA run's ``cola.json``: written once stage 0 has finished (the later stages read it)."""
    from ..io import write_json

    write_json(root / "cola.json", {"format": RUN_FORMAT, "model": opts.model, "data": opts.data, "max_len": opts.max_len,
                                    "config": cfg.to_json(),
                                    "world": {k: v for k, v in opts.__dict__.items() if k not in ("sizes", *FLAGS)}})


def _resolved(path: str) -> str:
    from ..models import resolve_model

    return resolve_model(path)


# --------------------------------------------------------------------------------------------------
# stage 1
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def bc_measure(policy, cache: HiddenCache, labels: list[list[int]], pad_id: int) -> dict[str, float]:
    """Cross-entropy and accuracy of the policy against the IDM's actions over a whole corpus."""
    was = policy.training
    policy.eval()
    ce = correct = n = 0.0
    for s in range(0, len(cache), 64):
        idx = list(range(s, min(s + 64, len(cache))))
        h, _, valid = cache.batch(idx, pad_id)
        m = transitions(valid)
        logits = policy(h, valid)[:, :-1][m]
        target = torch.tensor([a for i in idx for a in labels[i]])
        ce += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += float((logits.argmax(-1) == target).sum())
        n += len(target)
    policy.train(was)
    return {"val_bc_loss": ce / n, "val_bc_accuracy": correct / n}


def train_bc(opts: BCOptions, quiet: bool = False, log=None) -> dict:
    from ..io import write_json

    info = read_run(opts.run)
    with stage_run(policy_dir(opts.run, "bc"), "cola_bc", info["model"], opts, quiet) as run:
        log = log or run.say
        cola = load_cola(opts.run)
        tok, cfg = cola.tokenizer, cola.config
        seqs = read_corpus(info["data"], tok, info["max_len"])
        cache = hidden_cache(Path(opts.run), cola.base, _resolved(info["model"]), seqs, tok.pad_token_id, log=log,
                             dist=run.dist)
        labels = idm_actions(cola.idm, cache, tok.pad_token_id)
        if opts.val_data:
            val_seqs = read_corpus(opts.val_data, tok, info["max_len"])
            val_cache = hidden_cache(Path(opts.run), cola.base, _resolved(info["model"]), val_seqs, tok.pad_token_id,
                                     log=log, dist=run.dist)
            val_labels = idm_actions(cola.idm, val_cache, tok.pad_token_id)
        else:
            val_cache, val_labels = cache, labels
        torch.manual_seed(opts.seed)
        policy = LatentPolicy(cfg)
        run.create()

        def step_loss(idx: list[int]):
            h, _, valid = cache.batch(idx, tok.pad_token_id)
            m = transitions(valid)
            logits = policy(h, valid)[:, :-1][m]
            target = torch.tensor([a for i in idx for a in labels[i]])
            loss = F.cross_entropy(logits, target)
            return loss, {"tokens": m.sum(), "accuracy": (logits.argmax(-1) == target).float().mean()}

        validator = MeasureValidator("val_bc_loss", lambda: bc_measure(policy, val_cache, val_labels, tok.pad_token_id))
        t1 = time.perf_counter()
        rows = fit(run, {"policy": policy}, step_loss, len(cache), opts, validator, {}, "cola bc")
        policy.eval()
        # the last step's validation measured the final policy: on the corpus itself unless --val-data
        final = rows[-1] if not opts.val_data else bc_measure(policy, cache, labels, tok.pad_token_id)
        summary = {"bc_loss_initial": rows[0]["loss"], "bc_loss_final": final["val_bc_loss"],
                   "bc_accuracy": final["val_bc_accuracy"], "train_seconds": time.perf_counter() - t1,
                   "steps": opts.steps}
        run.finish(ModuleWeights({"policy": policy}))
        if run.main:
            write_json(run.path / "summary.json", summary)
    if run.main:
        drop_downstream(Path(opts.run), ("policy_rl", "eval"), log)
    run.dist.wait()
    return summary
