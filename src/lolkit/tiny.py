"""Tiny random models (causal LMs, and a T5 encoder–decoder) with a byte-level BPE tokenizer, built
offline in about a second.

Tests and the fast demo use them; nothing is downloaded. Same arguments, same files: the tokenizer
training and the weight initialisation are both deterministic.
"""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

# A Llama/ChatML-style template so conversational records work with the tiny model too.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

GENERIC_TEXT = """The quick brown fox jumps over the lazy dog. A reward model scores each answer between zero and one.
Language models learn to predict the next token. Please answer the question briefly and politely.
User: how are you today? Assistant: I am fine, thank you. The weather is sunny and warm.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 2024-01-31. Hello world! Good, bad, excellent, horrible, mediocre.
"""


def train_bpe(texts: list[str], specials: list[str], vocab_size: int = 512):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (special tokens first in the vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(texts, SPECIAL, vocab_size)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                 bos_token=None, unk_token=None)
    hf.chat_template = CHAT_TEMPLATE
    return hf


ARCHITECTURES = ("llama", "gpt2", "t5")


def create_tiny_model(out_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                      vocab_size: int = 512, seed: int = 0, extra_texts: list[str] | None = None,
                      arch: str = "llama", dropout: float = 0.1, context: int = 1024) -> Path:
    """Write a random model and its tokenizer to ``out_dir`` (atomically) and return the path.

    ``arch``: ``llama`` (no dropout anywhere, like today's Llama releases), ``gpt2`` (GPT-2 with
    ``dropout`` on the embeddings, the residuals and the attention weights, 0.1 as in GPT-2's own
    config: the cheapest model on which a training path that forgets to switch dropout off shows it)
    or ``t5`` (a T5 encoder–decoder with ``layers`` layers on each side and ``dropout`` as its
    dropout rate; relative positions, so no ``context``; its decoder starts from the pad token, as
    T5's does)."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    from .errors import LolkitError
    from .progress import quiet_transformers
    from .tasks import colours

    if arch not in ARCHITECTURES:
        raise LolkitError(f"unknown tiny-model architecture {arch!r} ({', '.join(ARCHITECTURES)})")
    quiet_transformers()
    texts = colours.corpus() + GENERIC_TEXT.splitlines() + list(extra_texts or [])
    tokenizer = build_tokenizer(texts, vocab_size)
    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None}
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=layers, n_head=heads,
                            n_positions=context, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            **special)
        model_cls = GPT2LMHeadModel
    elif arch == "t5":
        config = T5Config(vocab_size=len(tokenizer), d_model=hidden_size, d_kv=hidden_size // heads,
                          d_ff=hidden_size * 4, num_layers=layers, num_heads=heads, dropout_rate=dropout,
                          decoder_start_token_id=tokenizer.pad_token_id, **special)
        model_cls = T5ForConditionalGeneration
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=context, tie_word_embeddings=False, **special)
        model_cls = LlamaForCausalLM
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if arch == "t5":
        model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out
