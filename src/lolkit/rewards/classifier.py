"""Hugging Face sequence classifiers as rewards (``hf_classifier``).

Output (``output``):
  ``prob``     softmax over the labels, the probability of ``label`` (an index or a label name);
  ``sigmoid``  sigmoid of logit ``label`` (default 0; one-logit reward models such as DialogRPT);
  ``logit``    the raw logit ``label``;
  ``argmax``   the index of the largest logit.

Input (``input``):
  ``response`` the response alone;  ``joined`` prompt + ``separator`` + response (DialogRPT uses
  ``<|endoftext|>``);  ``pair`` (prompt, response) as a text pair;  ``oasst`` OpenAssistant's
  ``<|prompter|>…<|endoftext|><|assistant|>…<|endoftext|>`` turns;  ``comet`` the Symbolic Knowledge
  Distillation critic's (head, relation phrase + tail) pair;  or your own ``text`` / ``text_pair``
  templates with ``{prompt}``, ``{response}``, ``{reference}``, ``{separator}``, ``{eos}``,
  ``{history}`` (``meta.history`` joined by the separator) and ``{meta[key]}`` fields (e.g. ``text: "{meta[knowledge]}"``, ``text_pair: "{response}"``);
  ``reward_model`` a reward model trained by ``lolkit train --algo rm`` (or TRL's RewardTrainer): the
  rendered prompt + response + EOS exactly as in training (:mod:`lolkit.reward_model`; ``rm:PATH`` is the
  short spec for it, output ``logit``).

A causal language model is refused (loaded as a classifier, its head would be random), and so is a
head with several outputs for ``reward_model``.

Batching with padding must not change a decoder classifier's answer: GPT-2/GPT-NeoX/Llama heads read
the rightmost token that is not ``config.pad_token_id``, and their tokenizers often pad with the EOS
token that DialogRPT and OpenAssistant use *inside* the text. So decoder classifiers are padded on the
right with an id that occurs in no sequence of the batch, set as the pad id for that forward pass;
the result equals an unpadded forward of each text (tests check this).

OpenAssistant's reward models (``model_type: gpt_neox_reward_model``: GPT-NeoX + a linear ``out_proj``
on the last non-masked token) are not in transformers; lolkit loads them itself (:class:`NeoXRewardModel`),
no ``trust_remote_code`` and no OpenAssistant package needed.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from ..errors import LolkitError
from .base import REQUIRED, Batch, Component, register

INPUTS = ("response", "joined", "pair", "oasst", "comet", "template", "reward_model")
OUTPUTS = ("prob", "sigmoid", "logit", "argmax")

# Symbolic Knowledge Distillation (West et al. 2022) critic input: "head" and "<relation phrase> tail".
COMET_RELATIONS = {
    "HinderedBy": "can be hindered by",
    "xNeed": "but before, PersonX needed",
    "xWant": "as a result, PersonX wants",
    "xIntent": "because PersonX wanted",
    "xReact": "as a result, PersonX feels",
    "xAttr": "so, PersonX is seen as",
    "xEffect": "as a result, PersonX",
}
COMET_NAMES = {"PersonX": "Alex", "PersonY": "Sam"}  # SKD used random first names; fixed here for reproducibility
_COMET_TAGS = re.compile(r"<head>(.*?)</head>\s*<relation>(.*?)</relation>", re.S)
_TURN_MARK = re.compile(r"(?:^|\n\n|\s*###\s*)(Human|Assistant):[ \t]?|<\|(prompter|assistant)\|>")


# ------------------------------------------------------------------------------------------------
# OpenAssistant GPT-NeoX reward model
# ------------------------------------------------------------------------------------------------
def _read_state_dict(path: Path, allow_pickle: bool = False) -> dict:
    import torch

    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        state: dict = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    files = sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise LolkitError(f"{path}: no model weights (*.safetensors or pytorch_model*.bin)")
    if not allow_pickle:
        raise LolkitError(f"{path}: holds only pickle weights ({files[0].name}); set allow_pickle: true on the "
                          "reward component to load them (with torch's restricted weights_only unpickler)")
    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def load_neox_reward_model(path: str, dtype, allow_pickle: bool = False):
    """OpenAssistant's ``GPTNeoXRewardModel``: GPT-NeoX body, ``out_proj`` Linear(hidden, 1) on the
    last attended token (``pooling: last``) or the masked mean (``pooling: mean``)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXModel

    p = Path(path)
    raw = json.loads((p / "config.json").read_text())
    pooling = raw.pop("pooling", "last") or "last"
    for k in ("model_type", "architectures", "auto_map"):
        raw.pop(k, None)
    config = GPTNeoXConfig.from_dict(raw)

    class NeoXRewardModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = config
            self.gpt_neox = GPTNeoXModel(config)
            self.out_proj = torch.nn.Linear(config.hidden_size, 1)

        def forward(self, input_ids, attention_mask=None):
            hidden = self.gpt_neox(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            mask = attention_mask.to(hidden.dtype)
            if pooling == "mean":
                pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            else:
                last = attention_mask.cumsum(1).argmax(1)
                pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            return _Out(self.out_proj(pooled))

    model = NeoXRewardModel()
    state = _read_state_dict(p, allow_pickle)
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = ("rotary_emb.inv_freq", "attention.bias", "attention.masked_bias")
    unexpected = [k for k in unexpected if not k.endswith(buffers)]
    if missing or unexpected:
        raise LolkitError(f"{path}: not an OpenAssistant GPT-NeoX reward model (missing weights: "
                          f"{', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'})")
    return model.to(dtype)


class _History:
    """``{history}`` in a template: ``meta.history`` (a list of turns) joined by the separator;
    formatted lazily so templates without it never need it."""

    def __init__(self, meta: dict, sep: str):
        self.meta, self.sep = meta, sep

    def __format__(self, spec: str) -> str:
        h = self.meta.get("history")
        if isinstance(h, str):
            return h
        if not isinstance(h, list) or not all(isinstance(t, str) for t in h):
            raise KeyError("meta.history (a list of turns)")
        return self.sep.join(h)


class _Out:
    def __init__(self, logits):
        self.logits = logits


# ------------------------------------------------------------------------------------------------
# the component
# ------------------------------------------------------------------------------------------------
@register
class HFClassifier(Component):
    TYPE = "hf_classifier"
    OPTIONS = {
        "model": REQUIRED, "tokenizer": None, "output": "prob", "label": None, "input": "response",
        "separator": "", "text": None, "text_pair": None, "max_length": 512, "truncation_side": "right",
        "batch_size": 16, "trust_remote_code": False, "allow_pickle": False, "dtype": "float32", "device": "auto",
        # input reward_model: the lengths the training cut to (default: as recorded in the model's config.json)
        "max_prompt_len": None, "max_response_len": None,
    }
    DOC = "Any AutoModelForSequenceClassification (or OpenAssistant GPT-NeoX reward model) as a reward."

    def setup(self) -> None:
        self.opt_choice("output", OUTPUTS)
        if self.opts["text"] is not None or self.opts["text_pair"] is not None:
            if self.opts["input"] not in ("response", "template"):
                raise LolkitError(f"{self.source}: component '{self.name}': give 'input' or 'text'/'text_pair' "
                                  "templates, not both")
            if self.opts["text"] is None:
                raise LolkitError(f"{self.source}: component '{self.name}': 'text_pair' needs 'text' as well")
            self.opts["input"] = "template"
        self.opt_choice("input", INPUTS)
        if self.opts["input"] == "template" and self.opts["text"] is None:
            raise LolkitError(f"{self.source}: component '{self.name}': input: template needs a 'text' template")
        self.opt_choice("truncation_side", ("right", "left"))
        self.batch_size = self.opt_number("batch_size", integer=True, minimum=1)
        self.max_length = self.opt_number("max_length", integer=True, minimum=1)
        self.lengths = (self.opt_number("max_prompt_len", integer=True, minimum=1),
                        self.opt_number("max_response_len", integer=True, minimum=1))
        self._check_folder(Path(str(self.opts["model"])).expanduser())  # a local folder: fail before any work
        label = self.opts["label"]
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
            raise LolkitError(f"{self.source}: component '{self.name}': label must be an index or a label name")
        if self.opts["output"] == "argmax" and label is not None:
            raise LolkitError(f"{self.source}: component '{self.name}': output: argmax takes no label")
        self._loaded = None

    @property
    def value_range(self):
        return {"prob": (0.0, 1.0), "sigmoid": (0.0, 1.0)}.get(self.opts["output"])

    # -- loading -----------------------------------------------------------------------------------
    def _check_folder(self, path: Path) -> None:
        """Refuse a causal LM (its classification head would be random) and, for ``input: reward_model``, a
        head with several outputs; reads config files only."""
        from ..reward_model import read_head, refuse_causal_lm, refuse_many_outputs

        if not path.is_dir():
            return
        head = read_head(str(path))
        try:
            refuse_causal_lm(head)
            if self.opts["input"] == "reward_model":
                refuse_many_outputs(head)
        except LolkitError as e:
            raise LolkitError(f"{e} (reward component '{self.name}')") from None

    def _load(self):
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..models import check_model_files, choose_dtype, resolve_model
        from ..progress import quiet_transformers

        quiet_transformers()
        path = resolve_model(str(self.opts["model"]))
        self._check_folder(Path(path))
        tok_path = resolve_model(str(self.opts["tokenizer"])) if self.opts["tokenizer"] else path
        trust = bool(self.opts["trust_remote_code"])
        dtype = choose_dtype(str(self.opts["dtype"]))
        device = self.opts["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.opts["input"] == "reward_model":
            return self._load_reward_model(path, str(self.opts["dtype"]), trust, device)
        try:
            tok = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust)
            model_type = _model_type(path)
            pickle_ok = bool(self.opts["allow_pickle"])
            if model_type == "gpt_neox_reward_model":
                model = load_neox_reward_model(path, dtype, pickle_ok)
                style = "mask"
            else:
                if not pickle_ok:
                    check_model_files(path, False, tokenizer=False)
                kw = {} if pickle_ok else {"use_safetensors": True}
                model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, trust_remote_code=trust,
                                                                           **kw)
                style = "decoder" if _is_decoder(model_type) else "encoder"
        except LolkitError as e:
            raise LolkitError(f"reward component '{self.name}': {e}") from None
        except Exception as e:  # a user's model folder: any failure to read it is one line
            raise LolkitError(f"{path}: cannot load the classifier for reward component '{self.name}' "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
        if style != "mask" and not Path(path).is_dir():  # a hub id: what its config says, once loaded
            from ..reward_model import head_of, refuse_causal_lm

            refuse_causal_lm(head_of(model.config.to_dict(), f"{path} (config)"))
        model.to(device).eval()
        model.requires_grad_(False)
        tok.truncation_side = self.opts["truncation_side"]
        if style == "encoder" and tok.pad_token_id is None:
            raise LolkitError(f"{tok_path}: the tokenizer has no padding token")
        index = self._label_index(model)
        self._loaded = (tok, model, device, style, index)
        return self._loaded

    def _load_reward_model(self, path: str, dtype: str, trust: bool, device: str):
        from ..models import load_tokenizer, resolve_model
        from ..reward_model import load_for_scoring

        try:
            model, tok, lengths = load_for_scoring(path, dtype=dtype, trust_remote_code=trust, device=device,
                                                   allow_pickle=bool(self.opts["allow_pickle"]))
        except LolkitError as e:
            raise LolkitError(f"{e} (reward component '{self.name}')") from None
        if self.opts["tokenizer"]:
            tok = load_tokenizer(resolve_model(str(self.opts["tokenizer"])), trust)
        self.lengths = (self.lengths[0] or lengths[0], self.lengths[1] or lengths[1])
        self._loaded = (tok, model, device, "reward_model", self._label_index(model))
        return self._loaded

    def _label_index(self, model) -> int | None:
        out = self.opts["output"]
        if out == "argmax":
            return None
        n = int(getattr(model.config, "num_labels", 1)) if hasattr(model, "config") else 1
        label = self.opts["label"]
        if label is None:
            if out == "prob" and n == 1:
                raise self.error("output: prob needs at least two labels; this model has one logit (use sigmoid)")
            label = 1 if out == "prob" else 0
        if isinstance(label, str):
            names = {str(k).lower(): int(v) for k, v in (getattr(model.config, "label2id", None) or {}).items()}
            if label.lower() not in names:
                raise self.error(f"unknown label {label!r} (this model's labels: "
                                 f"{', '.join(sorted(names)) or 'none named'})")
            label = names[label.lower()]
        if not 0 <= label < n:
            raise self.error(f"label {label} out of range: the model has {n} logits")
        return label

    # -- inputs ------------------------------------------------------------------------------------
    def texts(self, batch: Batch, eos: str) -> tuple[list[str], list[str] | None]:
        mode = self.opts["input"]
        sep = self.opts["separator"]
        if mode == "response":
            return list(batch.responses), None
        if mode == "joined":
            return [f"{p}{sep}{r}" for p, r in zip(batch.prompts, batch.responses, strict=True)], None
        if mode == "pair":
            return list(batch.prompts), list(batch.responses)
        if mode == "oasst":
            return [oasst_text(m, r, eos) for m, r in zip(batch.messages, batch.responses, strict=True)], None
        if mode == "comet":
            pairs = [comet_pair(batch, i, self.name) for i in range(len(batch))]
            return [a for a, _ in pairs], [b for _, b in pairs]
        texts = [self._render(self.opts["text"], batch, i, eos) for i in range(len(batch))]
        if self.opts["text_pair"] is None:
            return texts, None
        return texts, [self._render(self.opts["text_pair"], batch, i, eos) for i in range(len(batch))]

    def _render(self, template: str, batch: Batch, i: int, eos: str) -> str:
        fields = {"prompt": batch.prompts[i], "response": batch.responses[i], "separator": self.opts["separator"],
                  "eos": eos, "meta": batch.metas[i],
                  "reference": batch.references[i][0] if batch.references[i] else "",
                  "history": _History(batch.metas[i], self.opts["separator"])}
        try:
            return string.Formatter().vformat(str(template), (), fields)
        except (KeyError, IndexError) as e:
            raise LolkitError(f"{batch.where[i]}: reward component '{self.name}': the template {template!r} needs "
                              f"{e} and the record has none") from None
        except (ValueError, AttributeError) as e:
            raise LolkitError(f"{self.source}: component '{self.name}': bad template {template!r} ({e})") from None

    # -- scoring -----------------------------------------------------------------------------------
    def logits(self, texts: list[str], pairs: list[str] | None):
        """Logits [n, num_labels] (float32, CPU) for the texts, in order, batched."""
        import torch

        tok, model, device, style, _ = self._load()
        out = []
        for s in range(0, len(texts), self.batch_size):
            a = texts[s : s + self.batch_size]
            b = pairs[s : s + self.batch_size] if pairs is not None else None
            enc = tok(a, b, truncation=True, max_length=self.max_length)
            ids = enc["input_ids"]
            with torch.inference_mode():
                if style == "encoder":
                    batch = tok.pad(enc, return_tensors="pt").to(device)
                    logits = model(**batch).logits
                else:
                    logits = self._decoder_forward(model, ids, device, style)
            out.append(logits.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)

    def _decoder_forward(self, model, ids: list[list[int]], device: str, style: str):
        import torch

        width = max(len(x) for x in ids)
        used = {t for x in ids for t in x}
        vocab = int(model.config.vocab_size)
        fresh = next((t for t in range(vocab - 1, -1, -1) if t not in used), None)
        if fresh is None:  # every id of the vocabulary occurs in this batch: one text at a time
            return torch.cat([self._decoder_forward(model, [x], device, style) for x in ids])
        input_ids = torch.tensor([x + [fresh] * (width - len(x)) for x in ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        if style == "mask":
            return model(input_ids=input_ids, attention_mask=mask).logits
        old = model.config.pad_token_id
        model.config.pad_token_id = fresh
        try:
            return model(input_ids=input_ids, attention_mask=mask).logits
        finally:
            model.config.pad_token_id = old

    def score(self, batch: Batch) -> list[float]:
        import torch

        tok, model, device, style, index = self._load()
        if style == "reward_model":  # the training sequence: rendered prompt (chat template) + response + EOS
            from ..reward_model import score_texts

            logits = score_texts(model, tok, batch.messages, batch.responses, self.lengths, self.batch_size,
                                 device)[:, None]
        else:
            logits = self.logits(*self.texts(batch, tok.eos_token or "<|endoftext|>"))
        out = self.opts["output"]
        if out == "argmax":
            values = logits.argmax(-1)
        elif out == "prob":
            values = torch.softmax(logits, -1)[:, index]
        elif out == "sigmoid":
            values = torch.sigmoid(logits[:, index])
        else:
            values = logits[:, index]
        return [float(v) for v in values.tolist()]


def _model_type(path: str) -> str | None:
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text()).get("model_type")
        except (json.JSONDecodeError, OSError):
            return None
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path), "model_type", None)


def _is_decoder(model_type: str | None) -> bool:
    """Classifiers whose head reads the last non-pad token: causal-LM families that are not also
    masked-LM encoders (RoBERTa and BERT have causal-LM classes too, but pool the first token)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def oasst_text(prompt, response: str, eos: str) -> str:
    """``<|prompter|>{turn}<|endoftext|><|assistant|>{turn}<|endoftext|>…<|assistant|>{response}<|endoftext|>``.

    Chat-message prompts map user/system → prompter and assistant → assistant. String prompts are
    split at their turn markers — Anthropic's ``\n\nHuman:`` / ``\n\nAssistant:``, A-LoL's
    ``### Human:`` / ``### Assistant:`` or PRO's ``<|prompter|>`` / ``<|assistant|>`` — and text before
    the first marker (a system preamble) is dropped; a string without markers is one prompter turn."""
    turns: list[tuple[str, str]] = []
    if isinstance(prompt, list):
        turns = [("assistant" if m["role"] == "assistant" else "prompter", m["content"].strip()) for m in prompt]
    else:
        marks = list(_TURN_MARK.finditer(prompt))
        if not marks:
            turns = [("prompter", prompt.strip())]
        for k, m in enumerate(marks):
            end = marks[k + 1].start() if k + 1 < len(marks) else len(prompt)
            text = prompt[m.end() : end].replace(eos, "").strip()
            who = "prompter" if (m.group(1) == "Human" or m.group(2) == "prompter") else "assistant"
            if text:
                turns.append((who, text))
    body = "".join(f"<|{who}|>{text}{eos}" for who, text in turns if text)
    return f"{body}<|assistant|>{response}{eos}"


def comet_pair(batch: Batch, i: int, name: str) -> tuple[str, str]:
    meta = batch.metas[i]
    head, rel = meta.get("head"), meta.get("relation")
    if head is None or rel is None:
        m = _COMET_TAGS.search(batch.prompts[i])
        if m is None:
            raise LolkitError(f"{batch.where[i]}: reward component '{name}' (input: comet) needs meta.head and "
                              "meta.relation, or a prompt with <head>…</head> <relation>…</relation>")
        head, rel = m.group(1).strip(), m.group(2).strip()
    if rel not in COMET_RELATIONS:
        raise LolkitError(f"{batch.where[i]}: reward component '{name}': relation {rel!r} has no critic phrase "
                          f"(known: {', '.join(COMET_RELATIONS)})")
    a, b = str(head), f"{COMET_RELATIONS[rel]} {batch.responses[i].strip()}"
    for k, v in COMET_NAMES.items():
        a, b = a.replace(k, v), b.replace(k, v)
    return a, b
