"""The iterative driver of learning from feedback: Quark, ALT-RM / LMU / LMC and SELM (spec §3).

Quark / ALT, iteration K (1-based; one row of metrics.jsonl):

1. sample ``samples_per_prompt`` responses per prompt from the current policy — unconditioned in
   iteration 1, conditioned on the best feedback from iteration 2 on;
2. score them with the reward and get the feedback (quantile token / word; or text + score,
   or a category, from the provider);
3. add (feedback, prompt, response) to the data pool, flush the oldest entries (``flush_factor``),
   re-bin the whole pool (score quantiles per prompt or globally; LMC: the category);
4. rejection-sample a training set with equal quotas per bin and prompt, untruncated responses first;
5. ``steps`` optimizer steps of conditional NLL − η·entropy + β·KL(π_ref ‖ π_θ) on it
   (:func:`lolkit.losses.conditional_nll`); for Quark the reference sees the prompt without the
   control token;
6. write ``iter-K/{samples,feedback,pool}.jsonl``; validate (greedy answers to the validation prompts under
   the best condition, every ``eval_every`` iterations and at the end, the best kept in
   ``checkpoints/best``); then the checkpoint ``checkpoints/step-K`` (the pool is part of it).

SELM, iteration K: a fresh slice of prompts; the current model's greedy answer y_ref; the reward ranks
{y_ref, the dataset's candidates}; chosen = best, rejected = worst (prompts whose candidates all tie are
skipped); the reference log-probs are those of the model at the start of the iteration, i.e. the model
iteration K−1 produced; ``steps`` optimizer steps of :func:`lolkit.losses.selm`.

An iteration is complete when its checkpoint exists (written atomically, last; the run lifecycle of
:mod:`lolkit.run`). ``--resume`` restarts after the last complete iteration, from its weights, optimizer,
scheduler and pool; everything random is seeded from (seed, iteration), so the result equals an
uninterrupted run's.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algorithms import get_algorithm
from ..checkpoint import ModelWeights
from ..config import TrainConfig, check_settings, default_lr, to_dict
from ..data.prompts import encode_loop_prompts, iteration_prompts, load_validation
from ..errors import LolkitError
from ..io import child_path, write_jsonl
from ..logprobs import gather_logprobs, response_rows, row_statistics, token_entropy, token_kl
from ..losses import FeedbackInputs, FeedbackParams, LossInputs, conditional_nll, selm
from ..models import count_parameters, is_peft, load_model
from ..online.policy import build_batch, frozen_copy
from ..run import Run, make_optimizer, make_scheduler
from ..tracking import loss_views
from . import pool as P
from .providers import make_provider

ITER_PREFIX = "iter-"


def resolve_feedback_config(cfg: TrainConfig) -> TrainConfig:
    """Defaults that depend on other settings, and every check a user's config can fail."""
    f, algo = cfg.feedback, cfg.algo.name
    row = get_algorithm(algo)
    condition = row.condition(f) if row.condition else None
    if cfg.optim.lr is None:
        cfg.optim.lr = default_lr(cfg, "feedback")
    if cfg.micro_batch_size is None:
        cfg.micro_batch_size = cfg.batch_size
    signal_from_provider = condition is not None and condition.provider_kind is not None and f.provider in ("model", "file")
    if cfg.reward is None:
        if cfg.data.train is not None and not signal_from_provider:
            raise LolkitError(f"--algo {algo} needs a reward: --reward SPEC (a task, preset, YAML file or module:function)")
        if cfg.data.train is None:
            cfg.reward = cfg.data.task
    if cfg.output_dir is None:
        data = Path(cfg.data.train).stem if cfg.data.train else cfg.data.task
        cfg.output_dir = str(child_path("runs", f"{algo}-{data}-seed{cfg.seed}", f"data.task {cfg.data.task!r}").as_posix())
    checks = [
        (f.iterations >= 1 and f.steps >= 1, "feedback.iterations and feedback.steps must be at least 1"),
        (f.samples_per_prompt >= 1, "feedback.samples_per_prompt must be at least 1"),
        (f.prompts_per_iteration >= 0, "feedback.prompts_per_iteration must be >= 0 (0: all prompts)"),
        (f.max_new_tokens >= 1, "feedback.max_new_tokens must be at least 1"),
        (f.temperature > 0, f"feedback.temperature must be > 0, got {f.temperature}"),
        (f.quantiles >= 1, "feedback.quantiles must be at least 1"),
        (f.binning in ("per_prompt", "global"), f"unknown feedback.binning {f.binning!r} (per_prompt, global)"),
        (len(f.categories) >= 1 and len(set(f.categories)) == len(f.categories),
         "feedback.categories must be a non-empty list of distinct names"),
        (f.flush_factor >= 0, f"feedback.flush_factor must be >= 0 (0: keep the whole pool), got {f.flush_factor}"),
        (f.quota is None or f.quota >= 1, "feedback.quota must be at least 1, or null"),
        (f.eta >= 0 and f.kl_beta >= 0, "feedback.eta and feedback.kl_beta must be >= 0"),
        (f.selm_alpha >= 0 and f.selm_beta > 0, "feedback.selm_alpha must be >= 0 and feedback.selm_beta > 0"),
        (f.provider in ("rule", "model", "file"), f"unknown feedback.provider {f.provider!r} (rule, model, file)"),
        (f.provider != "file" or bool(f.file), "feedback.provider file needs feedback.file (a JSONL of human feedback)"),
        (f.provider != "rule" or cfg.reward is not None, "feedback.provider rule derives feedback from a reward: pass --reward"),
        *(condition.checks(cfg) if condition is not None else []),
    ]
    check_settings(cfg, checks)
    return cfg


def selm_slice(n_prompts: int, size: int, seed: int, iteration: int) -> list[int]:
    """SELM's prompts of ``iteration`` (1-based): consecutive slices of one seeded permutation, so each
    iteration sees fresh prompts (wrapping around once all have been used)."""
    perm = list(range(n_prompts))
    random.Random(f"lolkit-selm-{seed}").shuffle(perm)
    start = (iteration - 1) * size
    return [perm[(start + j) % n_prompts] for j in range(size)]


@dataclass
class Example:
    cond: list[int]  # prompt ids the policy sees (with the condition)
    ref: list[int]  # prompt ids the reference sees (Quark: without the control token)
    response: list[int]


class Driver:
    """Holds the run's models and state; :meth:`train` is the loop (inside the run lifecycle ``lifecycle``)."""

    def __init__(self, cfg: TrainConfig, run: Run):
        from accelerate.utils import set_seed

        from ..data.tokenize import context_window
        from ..rewards import get_reward

        self.cfg, self.lifecycle = cfg, run
        self.f, self.algo = cfg.feedback, cfg.algo.name
        self.row = get_algorithm(self.algo)
        # what samples are conditioned on (None: SELM, whose pool holds preference pairs)
        self.condition = self.row.condition(self.f) if self.row.condition else None
        set_seed(cfg.seed)
        self.device = run.device
        self.policy, self.tok, self.model_path = load_model(cfg.model, trainable=True, device=self.device)
        # Quark / ALT: β·KL to the initial model; SELM: the reference is the model at the start of each
        # iteration, so its log-probs are taken from the policy itself before the iteration trains.
        self.use_kl = not self.row.preference_pairs and self.f.kl_beta > 0
        self.reference = frozen_copy(self.policy) if self.use_kl and not is_peft(self.policy) else None
        if self.condition is not None:
            self.condition.setup(self.policy, self.tok, cfg.seed)
        self.control = self.condition.control if self.condition is not None else []
        window = context_window(self.policy)  # prompts cut to fit: counted, data.truncation
        self.prompts = encode_loop_prompts(cfg, self.tok, window=window, reserve=self.f.max_new_tokens,
                                           model_path=self.model_path, log=run.say)
        self.records, self.prompt_ids = self.prompts.records, self.prompts.ids
        self.max_prompt_len = self.prompts.encoded.limits.max_prompt_len
        self.reward = get_reward(cfg.reward) if cfg.reward else None
        self.validation = load_validation(cfg, self.tok, window=window, model_path=self.model_path, log=run.say)
        kind = self.condition.provider_kind if self.condition is not None else None
        self.provider = make_provider(cfg, kind, self.reward, run.quiet, run.dist) if kind else None
        self.candidates = self._candidates() if self.row.preference_pairs else None
        self.total_steps = self.f.iterations * self.f.steps
        self.optimizer = make_optimizer(cfg.optim, self.policy)
        self.scheduler = make_scheduler(cfg.optim, self.optimizer, self.total_steps)
        # data-parallel training: ``model`` is the policy wrapped for DDP (the gradient-bearing forward runs
        # through it); sampling, no-grad passes and saving use the policy itself
        self.dist = run.dist
        self.model, self.optimizer = run.accelerator.prepare(self.policy, self.optimizer)
        self.pool: list[P.Entry] = []

    def state_dict(self) -> dict:
        """The data pool, as a part of every checkpoint (lolkit.checkpoint)."""
        return {"entries": [e.to_json() for e in self.pool]}

    def load_state_dict(self, state: dict) -> None:
        self.pool = [P.Entry.from_json(row) for row in state["entries"]]

    # -- inputs ---------------------------------------------------------------------------------------
    def _candidates(self) -> list[list[str]]:
        """SELM's dataset candidates of each prompt: every response the training records give it."""
        from ..data.tokenize import prompt_text

        by_prompt: dict[str, list[str]] = {}
        if self.cfg.data.train:
            from ..data.schema import load_prompts

            for r in load_prompts(self.cfg.data.train):
                by_prompt.setdefault(prompt_text(r.prompt), []).extend(r.responses)
        else:
            from ..tasks import get_task

            for row in get_task(self.cfg.data.task).records("train", self.cfg.seed):
                by_prompt.setdefault(prompt_text(row["prompt"]), []).append(row["response"])
        out = [list(dict.fromkeys(by_prompt.get(r.text, []))) for r in self.records]
        if not any(out):
            raise LolkitError(f"{self.cfg.data.train or self.cfg.data.task}: selm ranks the model's answer against the "
                              "dataset's candidate responses, and the data holds none (records need responses)")
        return out

    def conditioned(self, i: int, cond) -> list[int]:
        """Prompt ``i``'s ids with a condition before it: None (none), a token id (Quark) or feedback text (ALT).
        The prompt keeps its end when the whole exceeds max_prompt_len; a BOS token stays first."""
        base = self.prompt_ids[i]
        if cond is None:
            return base
        prefix = self.condition.prefix(self.tok, cond)
        bos = self.tok.bos_token_id
        head = [base[0]] if bos is not None and base and base[0] == bos else []
        body = base[len(head):]
        if self.max_prompt_len is None:
            return head + prefix + body
        room = max(1, self.max_prompt_len - len(prefix) - len(head))
        return head + prefix + body[-room:]

    def best_condition(self):
        """Iteration 1 samples from the unconditioned policy; later ones from the best condition of the pool."""
        return self.condition.best(self.pool) if self.pool else None

    def condition_label(self, cond) -> str | None:
        return None if cond is None else self.condition.label(self.tok, cond)

    # -- model passes ---------------------------------------------------------------------------------
    def write(self, path: Path, rows) -> None:
        """An iteration's records: written by the main process only."""
        if self.dist.is_main:
            write_jsonl(path, rows)

    def sample(self, ids: list[list[int]], seed: int, greedy: bool = False):
        """Responses to ``ids``, in order; with several processes each samples its share of the batches
        (:func:`lolkit.distributed.sample_sharded`: the same tokens as one process)."""
        from ..distributed import sample_sharded
        from ..generation import sample_tokens

        processor = None
        if self.control:  # the control tokens are conditions, never actions
            from transformers import SuppressTokensLogitsProcessor

            processor = lambda attn, ids: SuppressTokensLogitsProcessor(self.control, device=attn.device)  # noqa: E731
        return sample_sharded(self.dist, lambda part, size, s: sample_tokens(
            self.policy, part, pad_id=self.tok.pad_token_id, eos_id=self.tok.eos_token_id,
            max_new_tokens=self.f.max_new_tokens, do_sample=not greedy, temperature=self.f.temperature,
            batch_size=size, seed=s, logits_processor=processor), ids, self.cfg.eval.batch_size, seed)

    def decode(self, toks: list[int], finished: bool) -> str:
        return self.tok.decode(toks[:-1] if finished else toks, skip_special_tokens=True)

    def score(self, idx: list[int], texts: list[str]) -> list[tuple[float, dict]] | None:
        from ..distributed import score_sharded

        if self.reward is None:
            return None
        return score_sharded(self.dist, self.reward, [self.records[i].text for i in idx], texts,
                             [self.records[i].meta for i in idx])

    def reference_rows(self, batch):
        """The reference's response rows (no gradient): the frozen copy, or the policy with its adapter off."""
        with torch.no_grad():
            if self.reference is not None:
                return response_rows(self.reference, batch)
            with self.policy.disable_adapter():
                return response_rows(self.policy, batch)

    def token_logps(self, batch, model=None) -> torch.Tensor:
        """log π_θ of every response token [B, T] (0 on padding), through the chunked LM head; ``model``: the
        DDP-wrapped policy for a pass that trains."""
        return batch.unflatten(response_rows(model or self.policy, batch).token_logprobs())

    def fit(self, n_items: int, micro_step, normaliser, it: int, tokens) -> dict[str, float]:
        """``steps`` optimizer steps; batches of ``batch_size`` items drawn from shuffled passes over the
        items (seeded by iteration), split in micro-batches; returns the metrics averaged over steps.
        ``micro_step(items, normaliser)`` backpropagates Σ losses / normaliser, the normaliser being the
        whole step's (tokens or units), so accumulation over micro-batches is exact; ``tokens(items)``
        counts their response tokens (for the per-token and per-sequence views of the loss). Under several
        processes each takes its share of the step's batch (batch_size is divisible by their number, so every
        share has the same micro-batches) and backpropagates over the normaliser ÷ world (DDP averages the
        gradients); the metrics are summed over the processes."""
        from ..distributed import micro_contexts

        dist, accelerator = self.dist, self.lifecycle.accelerator
        rng = random.Random(f"lolkit-feedback-order-{self.cfg.seed}-{it}")
        queue: list[int] = []
        sums: dict[str, float] = {}
        self.policy.train()  # dropout was switched off at load (model.disable_dropout)
        for _ in range(self.f.steps):
            batch: list[int] = []
            while len(batch) < self.cfg.batch_size:
                if not queue:
                    queue = list(range(n_items))
                    rng.shuffle(queue)
                batch.append(queue.pop())
            norm = normaliser(batch)
            share = dist.share(batch)
            micros = [share[s : s + self.cfg.micro_batch_size] for s in range(0, len(share), self.cfg.micro_batch_size)]
            stats: dict[str, float] = {}
            for part, context in zip(micros, micro_contexts(accelerator, self.model, len(micros)), strict=True):
                with context:
                    for k, v in micro_step(part, norm / dist.world).items():
                        stats[k] = stats.get(k, 0.0) + v
            stats = {k: v / dist.world for k, v in dist.sum(stats).items()}
            stats.update(loss_views(stats["loss"] * norm, len(batch), tokens(batch)))
            if self.cfg.optim.max_grad_norm:
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                    [q for q in self.policy.parameters() if q.requires_grad], self.cfg.optim.max_grad_norm))
            stats["lr"] = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        return {k: v / self.f.steps for k, v in sums.items()}

    # -- Quark / ALT -----------------------------------------------------------------------------------
    def pool_iteration(self, it: int, out: Path) -> dict:
        f = self.f
        n = len(self.records)
        prompts = list(range(n)) if f.prompts_per_iteration == 0 else iteration_prompts(n, f.prompts_per_iteration,
                                                                                         self.cfg.seed, it)
        chosen = [i for i in prompts for _ in range(f.samples_per_prompt)]
        cond = self.best_condition()
        label = self.condition_label(cond)
        sampled = self.sample([self.conditioned(i, cond) for i in chosen], seed=self.cfg.seed * 1_000_003 + it * 1_009)
        texts = [self.decode(t, fin) for t, fin in sampled]
        scored = self.score(chosen, texts)
        rewards = [s for s, _ in scored] if scored else [None] * len(chosen)
        self.write(out / "samples.jsonl", (
            {"iteration": it, "sample": j, "prompt_index": i, "prompt": self.records[i].text, "condition": label,
             "response": texts[j], "tokens": len(sampled[j][0]), "finished": sampled[j][1], "reward": rewards[j]}
            for j, i in enumerate(chosen)))
        if self.provider is not None:
            fbs = self.provider([self.records[i].text for i in chosen], texts, rewards,
                                [c for _, c in scored] if scored else [{}] * len(chosen))
        else:
            fbs = None
        new = []
        for j, i in enumerate(chosen):
            fb = fbs[j] if fbs else None
            new.append(P.Entry(it, i, j, texts[j], list(sampled[j][0]), bool(sampled[j][1]), rewards[j],
                               fb.score if fb else float(rewards[j]), fb.text if fb else "",
                               fb.category if fb else None, fb.parsed if fb else True))
        self.pool = P.flush(self.pool + new, f.flush_factor, len(new))
        n_bins = self.condition.bins()
        P.assign_bins(self.pool, n_bins, f.binning, by_category=self.condition.by_category)
        picked = P.select_balanced(self.pool, f.quota, random.Random(f"lolkit-feedback-pool-{self.cfg.seed}-{it}"))
        self.write(out / "feedback.jsonl", (
            {"iteration": it, "sample": e.sample, "prompt_index": e.prompt_index, "reward": e.reward, "score": e.score,
             "bin": e.bin, "feedback": self.condition_label(self.condition.of_entry(e)), "category": e.category,
             "parsed": e.parsed} for e in new))
        sel = set(picked)
        self.write(out / "pool.jsonl", ({**e.to_json(), "selected": k in sel} for k, e in enumerate(self.pool)))

        examples = []
        for k in picked:
            e = self.pool[k]
            c = self.conditioned(e.prompt_index, self.condition.of_entry(e))
            ref = c if self.condition.reference_sees_condition else self.prompt_ids[e.prompt_index]
            examples.append(Example(c, ref, e.response_ids))
        params = FeedbackParams(eta=f.eta, kl_coef=f.kl_beta if self.use_kl else 0.0)
        pad = self.tok.pad_token_id

        # the reference's vocabulary: the tokenizer's tokens before any control token (a model whose embedding
        # matrix is padded beyond its tokenizer holds the control tokens in rows the reference has too, and
        # those rows have no reference probability)
        vocab = self.control[0] if self.control else None

        def micro(idx: list[int], norm: float) -> dict[str, float]:
            exs = [examples[i] for i in idx]
            b = build_batch([x.cond for x in exs], [x.response for x in exs], pad, self.device)
            rows = response_rows(self.model, b)
            ref = self.reference_rows(build_batch([x.ref for x in exs], [x.response for x in exs], pad, self.device)) \
                if params.kl_coef else None

            def stats(logits: torch.Tensor, sl: slice):  # one chunk of response rows: log-prob, entropy, KL
                out = (gather_logprobs(logits, rows.targets[sl]), token_entropy(logits))
                return out if ref is None else (*out, token_kl(ref.logits_at(sl)[:, :vocab], logits))

            per_row = [b.unflatten(x) for x in row_statistics(rows, stats)]
            tl = per_row[0]
            o = conditional_nll(FeedbackInputs(tl.sum(-1), tl, b.mask, entropy=per_row[1],
                                               kl=per_row[2] if ref is not None else None), params)
            self.lifecycle.accelerator.backward(o.losses.sum() / norm)
            return {k: float(v.detach().sum()) / norm for k, v in (("loss", o.losses), *o.metrics.items())}

        n_tokens = lambda batch: float(sum(len(examples[i].response) for i in batch))  # noqa: E731
        stats = self.fit(len(examples), micro, n_tokens, it, n_tokens)
        valid = [r for r in rewards if r is not None]
        counts = P.bin_counts(self.pool, picked, n_bins)
        row = {**stats, "condition": label, "samples": len(chosen), "pool_size": len(self.pool),
               "train_examples": len(picked), **counts,
               "finished": sum(fin for _, fin in sampled) / len(sampled),
               "response_len": sum(len(t) for t, _ in sampled) / len(sampled)}
        if self.provider is not None:
            row["feedback_score_mean"] = sum(fb.score for fb in fbs) / len(fbs)
            row["feedback_parsed"] = sum(fb.parsed for fb in fbs) / len(fbs)
        if valid:
            mean = sum(valid) / len(valid)
            row.update(reward_mean=mean, reward_std=math.sqrt(sum((r - mean) ** 2 for r in valid) / len(valid)),
                       reward_max=max(valid))
        return row

    # -- SELM ------------------------------------------------------------------------------------------
    def selm_iteration(self, it: int, out: Path) -> dict:
        from ..data.tokenize import encode_pair, render_prompt

        f, cfg = self.f, self.cfg
        n = len(self.records)
        size = f.prompts_per_iteration or max(1, math.ceil(n / f.iterations))
        prompts = selm_slice(n, size, cfg.seed, it)
        greedy = self.sample([self.prompt_ids[i] for i in prompts], seed=cfg.seed * 1_000_003 + it * 1_009, greedy=True)
        y_texts = [self.decode(t, fin) for t, fin in greedy]
        self.write(out / "samples.jsonl", (
            {"iteration": it, "prompt_index": i, "prompt": self.records[i].text, "y_ref": y_texts[j],
             "tokens": len(greedy[j][0]), "finished": greedy[j][1]} for j, i in enumerate(prompts)))
        # Rank {y_ref} ∪ candidates with the reward (y_ref first, so it wins ties for best).
        flat_idx, flat_txt, owner = [], [], []
        for j, i in enumerate(prompts):
            for t in [y_texts[j], *self.candidates[i]]:
                flat_idx.append(i)
                flat_txt.append(t)
                owner.append(j)
        scored = self.score(flat_idx, flat_txt)
        ranked: list[list[tuple[str, float, list[int] | None]]] = [[] for _ in prompts]
        for k, j in enumerate(owner):
            ids = list(greedy[j][0]) if not ranked[j] else None  # y_ref keeps its sampled tokens
            ranked[j].append((flat_txt[k], scored[k][0], ids))
        units, fb_rows, pool_rows = [], [], []
        for j, i in enumerate(prompts):
            cands = ranked[j]
            rs = [r for _, r, _ in cands]
            best = max(range(len(cands)), key=lambda c: (rs[c], -c))
            worst = min(range(len(cands)), key=lambda c: (rs[c], c))
            fb_rows.append({"iteration": it, "prompt_index": i, "candidates": [
                {"source": "y_ref" if c == 0 else "dataset", "response": t, "reward": r} for c, (t, r, _) in enumerate(cands)],
                "chosen": best, "rejected": worst, "used": rs[best] > rs[worst]})
            if rs[best] <= rs[worst]:
                continue  # every candidate ties: no preference to learn
            rendered = render_prompt(self.tok, self.records[i].prompt)
            toks = [ids if ids is not None else list(encode_pair(self.tok, rendered, t, cfg.data.max_prompt_len,
                                                                 cfg.data.max_response_len).response_ids)
                    for t, _, ids in (cands[best], cands[worst], cands[0])]
            units.append((self.prompt_ids[i], *toks))
            pool_rows.append({"iteration": it, "prompt_index": i, "prompt": self.records[i].text,
                              "chosen": cands[best][0], "rejected": cands[worst][0], "y_ref": cands[0][0],
                              "chosen_reward": rs[best], "rejected_reward": rs[worst], "y_ref_reward": rs[0],
                              "chosen_is_y_ref": best == 0})
        self.write(out / "feedback.jsonl", fb_rows)
        self.write(out / "pool.jsonl", pool_rows)
        if not units:
            raise LolkitError(f"selm iteration {it}: the reward ties every candidate of all {len(prompts)} prompts of the "
                              "slice, so there is no preference to learn; use a reward that separates them")
        pad = self.tok.pad_token_id

        def rows_of(idx: list[int]):
            ps = [units[u][0] for u in idx] * 3
            rs = [units[u][1] for u in idx] + [units[u][2] for u in idx] + [units[u][3] for u in idx]
            return build_batch(ps, rs, pad, self.device)

        # π_ref of this iteration = the model the previous iteration produced = the policy right now; each
        # process scores its share of the micro-batches (the same batches as one process), gathered in order
        def ref_part(c: int, s: int, e: int) -> list:
            return self.token_logps(rows_of(list(range(s, e)))).sum(-1).view(3, -1).T.cpu().tolist()

        self.policy.eval()
        with torch.no_grad():
            ref = torch.tensor(self.dist.map_chunks(len(units), self.cfg.micro_batch_size, ref_part),
                               dtype=torch.float32).view(len(units), 3)
        params = FeedbackParams(beta=f.selm_beta, alpha=f.selm_alpha, group_size=3)

        def micro(idx: list[int], norm: float) -> dict[str, float]:
            b = rows_of(idx)
            tl = self.token_logps(b, self.model)
            r = ref[idx].T.reshape(-1).to(self.device)  # response-major: chosen, rejected, y_ref
            o = selm(LossInputs(tl.sum(-1), tl, b.mask, r), params)
            self.lifecycle.accelerator.backward(o.losses.sum() / norm)
            return {k: float(v.detach().sum()) / norm for k, v in (("loss", o.losses), *o.metrics.items())}

        stats = self.fit(len(units), micro, lambda batch: float(len(batch)), it,
                         lambda batch: float(sum(len(r) for u in batch for r in units[u][1:])))
        y_rewards = [c[0][1] for c in ranked]
        return {**stats, "prompts": len(prompts), "pairs": len(units), "ties_skipped": len(prompts) - len(units),
                "reward_mean": sum(y_rewards) / len(y_rewards),
                "chosen_reward": sum(u["chosen_reward"] for u in pool_rows) / len(pool_rows),
                "rejected_reward": sum(u["rejected_reward"] for u in pool_rows) / len(pool_rows),
                "y_ref_chosen": sum(u["chosen_is_y_ref"] for u in pool_rows) / len(pool_rows),
                "finished": sum(fin for _, fin in greedy) / len(greedy)}

    # -- validation ----------------------------------------------------------------------------------------
    def validator(self):
        """Greedy answers to the validation prompts under the condition sampling would use next (none before
        the pool holds anything; SELM: none), scored by the reward (lolkit.validation)."""
        from ..validation import RewardValidator

        v = self.validation
        if v is None or self.reward is None:
            return RewardValidator(self.cfg, self.tok, None, [], [], [])
        cond = self.best_condition() if self.condition is not None else None
        prefix = "" if cond is None else self.condition.as_text(self.tok, cond)
        return RewardValidator(self.cfg, self.tok, self.reward, [prefix + p for p in v.rendered], v.texts, v.records)

    # -- the loop --------------------------------------------------------------------------------------
    def train(self) -> Path:
        cfg, f, run = self.cfg, self.f, self.lifecycle
        run.create()
        weights = ModelWeights(self.policy, self.tok)
        parts = {"pool": self}
        start = run.restore(weights, self.optimizer, self.scheduler, parts)
        for d in run.path.glob(f"{ITER_PREFIX}*") if run.main else []:  # a killed iteration's leftovers: redone
            num = d.name[len(ITER_PREFIX):]
            if num.isdigit() and int(num) > start:
                shutil.rmtree(d)
        total, trainable = count_parameters(self.policy)
        truncation = self.prompts.truncation()
        if self.validation is not None:
            truncation["val"] = self.validation.truncation
        run.write_info({
            "algo": self.algo, "model_path": self.model_path, "data": cfg.data.train or cfg.data.task,
            "reward": self.reward.name if self.reward else None, "prompts": len(self.records),
            "iterations": f.iterations, "steps_per_iteration": f.steps, "total_steps": self.total_steps,
            "parameters": total, "trainable_parameters": trainable, "device": str(self.device),
            "reference": ("model at the start of each iteration" if self.row.preference_pairs else "none (kl_beta 0)"
                          if not self.use_kl else "adapter disabled" if self.reference is None else "frozen copy"),
            "control_tokens": self.tok.convert_ids_to_tokens(self.control),
            "provider": self.provider.name if self.provider else None,
            "val_prompts": len(self.validation.texts) if self.validation else 0, "truncation": truncation})
        with run.logging(f.iterations, cfg.report_to):
            for it in range(start + 1, f.iterations + 1):
                t0 = time.perf_counter()
                out = run.path / f"{ITER_PREFIX}{it}"
                if run.main:
                    out.mkdir(parents=True, exist_ok=True)
                row = self.selm_iteration(it, out) if self.row.preference_pairs else self.pool_iteration(it, out)
                row = {"step": it, "iteration": it, **row, "iteration_time": round(time.perf_counter() - t0, 4)}
                row.update(run.validate(it, self.validator(), weights, self.policy))
                run.log(row)  # a resume drops rows past the last checkpoint
                run.checkpoint(it, weights, self.optimizer, self.scheduler, parts, metric="val_reward")
        return run.finish(weights)


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    cfg = resolve_feedback_config(cfg)
    with Run(cfg.output_dir, to_dict(cfg), resume=resume, overwrite=overwrite, quiet=quiet, save_every=1,
             eval_every=cfg.eval_every, keep=max(1, cfg.save_total_limit),
             divisible={"batch_size": cfg.batch_size}) as run:
        return Driver(cfg, run).train()
