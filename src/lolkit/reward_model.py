"""Scalar reward models (``lolkit train --algo rm``): loading, the training forward, pairwise validation,
and scoring with a trained folder.

A reward model is an ``AutoModelForSequenceClassification`` with one output. As in TRL 1.16's
``RewardTrainer``, the sequence is the rendered prompt + the response + EOS, right-padded with the
tokenizer's pad token, and ``config.pad_token_id`` is set to that token so that the head reads the
last token that is not padding. (When the pad token *is* the EOS token — SmolLM2, most tokenizers
without a pad token — that is the last response token: the appended EOS counts as padding. TRL
behaves the same; a plain ``from_pretrained`` of the saved folder does too.) lolkit tokenises prompt
and response separately (spec, "Tokenisation"), so a prompt and a response that share a token at
their boundary differ from TRL's joint tokenisation; otherwise the token ids are TRL's.

Scoring (the ``hf_classifier`` component with ``input: reward_model``, or the ``rm:PATH`` spec) builds
exactly the training sequence, with the lengths recorded in the folder's ``config.json``
(``lolkit_reward_model``), and returns the raw logit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import LolkitError, data_error

CONFIG_KEY = "lolkit_reward_model"  # config.json entry: the prompt / response lengths the model was trained with
# Without that entry (an adapter folder, a model trained elsewhere): lolkit train's default lengths.
DEFAULT_LENGTHS = (256, 64)
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


# ------------------------------------------------------------------------------------------------
# what a model folder holds
# ------------------------------------------------------------------------------------------------
@dataclass
class Head:
    """What a model folder's config says about its head."""

    kind: str  # classifier | causal_lm | other
    outputs: int | None  # outputs of a classifier head
    name: str  # the architecture (or adapter task) that says so
    where: str  # the file, for messages
    field: str  # the field, for messages


def read_head(path: str) -> Head | None:
    """The head of a local model directory (from ``config.json``, or an adapter's ``task_type``);
    None for what is not a local directory (a hub id: checked once loaded)."""
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        from .io import read_json

        conf = read_json(p / "adapter_config.json")
        task = conf.get("task_type") if isinstance(conf, dict) else None
        kind = {"SEQ_CLS": "classifier", "CAUSAL_LM": "causal_lm"}.get(str(task), "other")
        return Head(kind, None, f"a {task} adapter", str(p / "adapter_config.json"), "task_type")
    if not (p / "config.json").is_file():
        return None
    try:
        conf = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # the loader reports a damaged config with its own message
    return head_of(conf, str(p / "config.json"))


def head_of(conf: dict, where: str) -> Head:
    archs = [str(a) for a in conf.get("architectures") or []]
    if conf.get("model_type") == "gpt_neox_reward_model":  # OpenAssistant's: one output, see rewards.classifier
        return Head("classifier", 1, "gpt_neox_reward_model", where, "model_type")
    labels = conf.get("id2label")
    outputs = len(labels) if isinstance(labels, dict) and labels else conf.get("num_labels")
    if any(a.endswith("ForSequenceClassification") for a in archs):
        # transformers' default is two labels when a config names none
        return Head("classifier", int(outputs) if isinstance(outputs, int) else 2, archs[0], where,
                    "id2label" if isinstance(labels, dict) and labels else "num_labels")
    if archs and all(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
        return Head("causal_lm", None, archs[0], where, "architectures")
    return Head("other", None, ", ".join(archs) or str(conf.get("model_type")), where, "architectures")


def refuse_causal_lm(head: Head | None) -> None:
    """A causal LM loaded as a sequence classifier gets a randomly initialised head: scores would be noise."""
    if head is not None and head.kind == "causal_lm":
        raise data_error(head.where, None, head.field, f"{head.name} is a causal language model, not a sequence "
                         "classifier: loaded as a reward its head would be random; train a reward model from it "
                         "with `lolkit train --algo rm` and score with rm:RUN/final")


def refuse_many_outputs(head: Head | None) -> None:
    if head is not None and head.kind == "classifier" and head.outputs not in (None, 1):
        raise data_error(head.where, None, head.field, f"the classifier head has {head.outputs} outputs; a reward "
                         "model has one (num_labels=1)")


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def load_for_training(cfg, *, device=None):
    """(model, tokenizer, resolved path) to train a reward model from ``cfg.model``: a causal LM (a fresh
    head with one output is added, initialised from the seeded RNG, as TRL does), a one-output
    classifier, or a reward model's LoRA adapter (task SEQ_CLS) to continue training."""
    from .models import load_model, resolve_model

    head = read_head(resolve_model(cfg.model.name))
    refuse_many_outputs(head)
    if head is not None and head.kind == "causal_lm" and head.field == "task_type":
        raise data_error(head.where, None, head.field, "a causal-LM (policy) adapter, not a reward model: train the "
                         "reward model from its base model (or from the merged model)")
    model, tokenizer, path = load_model(cfg.model, trainable=True, device=device, reward_model=True)
    # scoring rebuilds the training sequences with these lengths (saved in config.json with the model)
    setattr(model.config, CONFIG_KEY, {"max_prompt_len": cfg.data.max_prompt_len,
                                       "max_response_len": cfg.data.max_response_len})
    return model, tokenizer, path


def scores(model, input_ids, attention_mask):
    """r(x, y) [B] in float32: the head's one output at the last token that is not padding."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, 0].float()


def row_chunks(lengths: list[int], min_rows: int = 4, gain: float = 0.1) -> list[list[int]]:
    """Rows (indices into ``lengths``) in groups that each run as one forward, cut to their own longest row.

    The rows are sorted longest first; a group is cut in two where that saves the most padded tokens, as
    long as the cut saves at least ``gain`` of the group's tokens and leaves ``min_rows`` rows on each
    side. A batch of pairs needs this: pairs of similar length share a step, but the chosen and the
    rejected answer of one pair can differ a lot, and a row's score does not depend on the padding after
    it, so each group can stop at its own longest row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    todo = [order]
    while todo:
        rows = todo.pop()
        n, width = len(rows), lengths[rows[0]]
        cut, best = None, n * width
        for k in range(min_rows, n - min_rows + 1):
            cost = k * width + (n - k) * lengths[rows[k]]
            if cost < best:
                cut, best = k, cost
        if cut is None or best > (1 - gain) * n * width:
            out.append(rows)
        else:
            todo += [rows[cut:], rows[:cut]]
    return out


def forward(model, batch):
    """The training forward of a reward model: :class:`~lolkit.losses.LossInputs` with ``scores``, the
    rows run in length groups (:func:`row_chunks`). Under DistributedDataParallel the batch runs as one
    forward: DDP expects one forward per backward."""
    import torch

    from .losses import LossInputs

    lengths = batch.attention_mask.sum(-1).tolist()
    groups = [list(range(len(lengths)))]
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        groups = row_chunks(lengths)
    if len(groups) == 1:
        return LossInputs(mask=batch.response_mask, scores=scores(model, batch.input_ids, batch.attention_mask))
    parts, rows = [], []
    for g in groups:
        idx = torch.tensor(g, device=batch.input_ids.device)
        width = lengths[g[0]]
        parts.append(scores(model, batch.input_ids[idx, :width], batch.attention_mask[idx, :width]))
        rows += g
    r = torch.cat(parts)[torch.argsort(torch.tensor(rows, device=batch.input_ids.device))]  # back to batch order
    return LossInputs(mask=batch.response_mask, scores=r)


class PairValidator:
    """Pairwise accuracy on the validation pairs (higher is better): the fraction of pairs whose chosen
    response scores above the rejected one (ties count as wrong), over every validation pair; also the
    mean loss there (``val_loss``, margins and centering included)."""

    metric = "val_accuracy"

    def __init__(self, cfg, data, tokenizer):
        from .data.dataset import check_distinct_pairs, expand, pair_margins
        from .data.tokenize import encode_pair, render_prompt

        self.cfg, self.tokenizer = cfg, tokenizer
        records = [r for r in data.val_records if r.responses]
        source = cfg.data.val or data.source
        if cfg.data.val and (not records or records[0].kind not in ("preference", "ranking")):
            kind = records[0].kind if records else "prompt-only"
            raise LolkitError(f"{cfg.data.val}: --algo {cfg.algo.name} validates on preference pairs or rankings, and "
                              f"this file holds {kind} records")
        units = expand(records, "pairs")
        check_distinct_pairs(records, units, source)
        margins = pair_margins(records, units, source)
        rendered: dict[int, str] = {}
        d = cfg.data
        self.pairs = []
        for k, unit in enumerate(units):
            enc = []
            for i, j in unit:
                if i not in rendered:
                    rendered[i] = render_prompt(tokenizer, records[i].prompt)
                enc.append(encode_pair(tokenizer, rendered[i], records[i].responses[j], d.max_prompt_len,
                                       d.max_response_len))
            self.pairs.append((enc[0], enc[1], 0.0 if margins is None else margins[k]))
        self.has_margins = margins is not None
        if cfg.data.val and not self.pairs:
            raise LolkitError(f"{cfg.data.val}: no validation pairs (every ranking has equal rewards)")

    @property
    def enabled(self) -> bool:
        return bool(self.pairs)

    def better(self, a: float, b: float | None) -> bool:
        return b is None or a > b

    def run(self, model) -> dict[str, float]:
        import torch

        from .data.tokenize import collate
        from .losses import LossInputs, LossParams
        from .losses.reward_model import reward_model

        dev = next(model.parameters()).device
        size = self.cfg.micro_batch_size
        params = LossParams(center_rewards_coefficient=self.cfg.algo.center_rewards_coefficient)
        right = loss = 0.0
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                for s in range(0, len(self.pairs), size):
                    chunk = self.pairs[s : s + size]
                    b = collate([p[0] for p in chunk] + [p[1] for p in chunk], range(2 * len(chunk)),
                                self.tokenizer.pad_token_id).to(dev)
                    m = torch.tensor([p[2] for p in chunk], device=dev) if self.has_margins else None
                    out = reward_model(LossInputs(scores=scores(model, b.input_ids, b.attention_mask), margins=m),
                                       params)
                    right += out.metrics["accuracy"].sum().item()
                    loss += out.losses.sum().item()
        finally:
            model.train(was)
        n = len(self.pairs)
        return {"val_accuracy": right / n, "val_loss": loss / n}


# ------------------------------------------------------------------------------------------------
# scoring with a trained folder
# ------------------------------------------------------------------------------------------------
def load_for_scoring(path: str, *, dtype: str = "float32", trust_remote_code: bool = False, device=None,
                     allow_pickle: bool = False):
    """(model, tokenizer, (max_prompt_len, max_response_len)) of a reward-model folder (full model or
    LoRA adapter), frozen, on ``device``. Refuses a causal LM and a head with several outputs."""
    from .models import ModelConfig, load_model, resolve_model

    head = read_head(resolve_model(path))
    refuse_causal_lm(head)
    refuse_many_outputs(head)
    if head is None:  # a hub id: what the loaded config says
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(resolve_model(path), trust_remote_code=trust_remote_code).to_dict()
        refuse_causal_lm(head_of(conf, f"{path} (config)"))
        refuse_many_outputs(head_of(conf, f"{path} (config)"))
    model, tokenizer, _ = load_model(ModelConfig(name=path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                 allow_pickle=allow_pickle),
                                     trainable=False, device=device, reward_model=True)
    saved = getattr(model.config, CONFIG_KEY, None) or {}
    lengths = (saved.get("max_prompt_len") or DEFAULT_LENGTHS[0], saved.get("max_response_len") or DEFAULT_LENGTHS[1])
    return model, tokenizer, lengths


def score_texts(model, tokenizer, prompts: list, responses: list[str], lengths: tuple[int, int],
                batch_size: int, device):
    """r(x, y) [n] (float32, CPU) for prompts (plain text or chat messages, rendered with the tokenizer's
    chat template as in training) and responses, in batches of similar length."""
    import torch

    from .data.tokenize import collate, encode_pair, render_prompt

    enc = [encode_pair(tokenizer, render_prompt(tokenizer, p), r, lengths[0], lengths[1])
           for p, r in zip(prompts, responses, strict=True)]
    out = torch.empty(len(enc), dtype=torch.float32)
    # longest first, so each batch pads to lengths close to its own (the values do not depend on it)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        b = collate([enc[i] for i in idx], idx, tokenizer.pad_token_id).to(device)
        with torch.inference_mode():
            out[idx] = scores(model, b.input_ids, b.attention_mask).cpu()
    return out
