"""What Quark and ALT condition the policy on: small objects, one per algorithm, named in its row of
:mod:`lolkit.algorithms` — the feedback loop (:mod:`lolkit.feedback`) asks the object and never the
algorithm's name.

* :class:`QuantileToken` (quark)    — a reward-quantile control token ``<|quantile_k|>``, new in the
  vocabulary, its input embedding drawn from N(mean, std) of the existing embeddings (per dimension);
  the reference sees the prompt without it;
* :class:`QuantileWord` (alt_rm)    — the quantile as a word ("Excellent." … "Horrible."), input
  "{word} input: {prompt}";
* :class:`FeedbackText` (alt_lmu)   — free text + a score from a provider, input "feedback: {text} input:
  {prompt}"; the pool is binned by the score;
* :class:`FeedbackCategory` (alt_lmc) — a category from a provider, input "feedback: {category} input:
  {prompt}"; the pool is binned by the category.

Bins are numbered from the best (0).
"""

from __future__ import annotations

QUARK_TOKEN = "<|quantile_{}|>"


def add_control_tokens(model, tokenizer, n: int, seed: int) -> list[int]:
    """Quark: add ``n`` special tokens, grow the embeddings if they have no room for them, and draw each
    new token's input-embedding row from N(mean, std) of the tokenizer's rows (per dimension, seeded).
    Returns their ids, best first.

    Many models pad their embedding matrix beyond the tokenizer (Qwen2.5, Pythia, OPT): the new tokens
    then take rows that already exist, and the matrix is never shrunk to ``len(tokenizer)`` — that would
    drop rows the frozen reference still has and break the KL term."""
    import torch

    names = [QUARK_TOKEN.format(k) for k in range(n)]
    old = len(tokenizer)
    tokenizer.add_tokens(names, special_tokens=True)  # special: never split, dropped by decode(skip_special_tokens)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        base = emb[:old].float()
        gen = torch.Generator().manual_seed(seed * 9_973 + 17)
        draw = torch.normal(base.mean(0).expand(n, -1).cpu(), base.std(0).expand(n, -1).cpu(), generator=gen)
        emb[old : old + n] = draw.to(emb.dtype).to(emb.device)
    return tokenizer.convert_tokens_to_ids(names)


def best_feedback(pool) -> str:
    """LMU's condition at sampling time: the feedback text of the best-scored entry (first among ties)."""
    best = max(range(len(pool)), key=lambda i: (pool[i].score, -i))
    return pool[best].feedback


class Condition:
    """The shared behaviour: bins are score quantiles, the condition is text put before the prompt,
    the reference sees the conditioned prompt too, and no provider is needed."""

    provider_kind: str | None = None  # "lmu" / "lmc": the feedback comes from a provider
    by_category = False  # bins are the provider's categories instead of score quantiles
    reference_sees_condition = True  # False: the KL's reference is fed the prompt without the condition

    def __init__(self, feedback):
        self.f = feedback
        self.control: list[int] = []  # token ids that are conditions, never actions (Quark)

    def checks(self, cfg) -> list[tuple[bool, str]]:
        return []

    def setup(self, model, tokenizer, seed: int) -> None:
        """Called once the policy is loaded (Quark adds its tokens here)."""

    def bins(self) -> int:
        return self.f.quantiles

    def of_entry(self, entry):
        """What pool entry ``entry`` is trained under: its bin's condition (``of_bin``, each subclass's)."""
        return self.of_bin(entry.bin)

    def best(self, pool):
        """The condition sampling uses from the second iteration on: the best bin's."""
        return self.of_bin(0)

    def text(self, cond: str) -> str:
        return f"feedback: {cond} input: "

    def prefix(self, tokenizer, cond) -> list[int]:
        return tokenizer(self.text(cond), add_special_tokens=False)["input_ids"]

    def label(self, tokenizer, cond) -> str:
        return cond

    def as_text(self, tokenizer, cond) -> str:
        """The condition as text put before a rendered prompt (validation generates from text)."""
        return self.text(cond)


class QuantileToken(Condition):
    reference_sees_condition = False  # the control token has no meaning for the reference

    def checks(self, cfg) -> list[tuple[bool, str]]:
        return [(not (cfg.model.lora or cfg.model.qlora),
                 "quark adds control tokens to the vocabulary, whose embeddings must train: use full fine-tuning, or "
                 "alt_rm (the quantiles as words) with --lora")]

    def setup(self, model, tokenizer, seed: int) -> None:
        self.control = add_control_tokens(model, tokenizer, self.f.quantiles, seed)

    def of_bin(self, b: int) -> int:
        return self.control[b]

    def prefix(self, tokenizer, cond: int) -> list[int]:
        return [cond]

    def label(self, tokenizer, cond: int) -> str:
        return tokenizer.convert_ids_to_tokens(cond)

    def as_text(self, tokenizer, cond: int) -> str:  # a special token: its text encodes to the token again
        return self.label(tokenizer, cond)


class QuantileWord(Condition):
    def checks(self, cfg) -> list[tuple[bool, str]]:
        f = cfg.feedback
        return [(len(f.words) == f.quantiles, f"alt_rm needs one word per quantile: feedback.words has {len(f.words)}, "
                                              f"feedback.quantiles is {f.quantiles}")]

    def of_bin(self, b: int) -> str:
        return self.f.words[b]

    def text(self, cond: str) -> str:
        return f"{cond} input: "


class FeedbackText(Condition):
    provider_kind = "lmu"

    def of_entry(self, entry) -> str:  # each entry keeps its own text: there is no condition per bin
        return entry.feedback

    def best(self, pool) -> str:
        return best_feedback(pool)


class FeedbackCategory(Condition):
    provider_kind = "lmc"
    by_category = True

    def bins(self) -> int:
        return len(self.f.categories)

    def of_bin(self, b: int) -> str:
        return self.f.categories[b]
