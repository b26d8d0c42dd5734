"""Generation, reference and reward passes: lolkit's code paths vs calling the model directly on the
same batches (target for generation: throughput ≥ 0.95 of a direct `model.generate`), and each pass
in tokens per second.

Model: a Llama (hidden 256, 4 layers; `--model smollm2` for SmolLM2-135M-Instruct), CPU fp32, one
torch thread. Timed in alternation, in one run (medians of per-round ratios):

* eval     `lolkit.generation.generate` (tokenise, sort, left-pad, generate, decode) vs
           `model.generate` on the already padded batch, 8 prompts, greedy, 16 new tokens, min_new_tokens=16 so
           every call makes the same number of tokens
* rollout  `lolkit.generation.sample_tokens` (online RL) vs `model.generate`, sampling, same seed
* reference `lolkit.engine.reference.compute_reference` (sorted batches, sequence + token log-probs)
           vs a bare no-grad `model(...)` forward over the same batches in dataset order
* reward   an `hf_classifier` reward (a Llama sequence classifier of the same size) scoring the
           responses via `Reward.score` vs a bare classifier forward over the same token batches

Usage: python benchmarks/generation.py [--quick] [--model smollm2]
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    WORDS,
    generation_fns,
    interleaved_runs,
    paired_ratio,
    scratch,
    timing_args,
    tiny_llama,
    verdict,
)

TARGET = 0.95


def main() -> None:
    args = timing_args(__doc__, 4, 9, lambda ap: ap.add_argument(
        "--model", default=None, help="smollm2, or a model directory (default: a random Llama)"))
    rounds = args.rounds

    from transformers import LlamaConfig, LlamaForSequenceClassification

    from lolkit.data.tokenize import collate, encode_pair
    from lolkit.engine.reference import compute_reference
    from lolkit.models import ModelConfig, load_model
    from lolkit.rewards import get_reward

    tmp = scratch("lolkit-gen-bench-")
    model_dir = args.model or str(tiny_llama(tmp, hidden=256, layers=4))
    model, tok, _ = load_model(ModelConfig(name=model_dir), trainable=False)
    rng = random.Random(0)
    words = lambda a, b: " ".join(rng.choice(WORDS) for _ in range(rng.randint(a, b)))  # noqa: E731
    n_prompts, new = 8, 16
    prompts = [words(6, 30) + "?" for _ in range(n_prompts)]
    responses = [words(5, 40) + "." for _ in range(32)]
    pad, eos = tok.pad_token_id, tok.eos_token_id

    # lolkit's calls and model.generate on the batch lolkit builds (sorted by length, left-padded)
    gen_fns = generation_fns(model, tok, prompts, new)

    # reference pass: 32 (prompt, response) examples, micro-batches of 16
    examples = [encode_pair(tok, prompts[i % n_prompts], r, 256, 64) for i, r in enumerate(responses)]
    ref_tokens = sum(len(e) for e in examples)

    def lolkit_reference():
        compute_reference(model, examples, pad, 16, disable_adapter=False)

    @torch.no_grad()
    def bare_reference():
        for s in range(0, len(examples), 16):
            b = collate(examples[s : s + 16], range(16), pad)
            model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)

    # reward pass: a sequence classifier of the same shape, random weights
    conf = LlamaConfig(**{k: getattr(model.config, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                                  "num_hidden_layers", "num_attention_heads",
                                                                  "num_key_value_heads")},
                       num_labels=1, pad_token_id=pad, eos_token_id=eos)
    torch.manual_seed(0)
    clf_dir = tmp / "classifier"
    clf = LlamaForSequenceClassification(conf).eval()
    clf.save_pretrained(clf_dir, safe_serialization=True)
    tok.save_pretrained(clf_dir)
    reward = get_reward({"components": {"rm": {"type": "hf_classifier", "model": str(clf_dir), "output": "sigmoid",
                                               "batch_size": 16}}})
    rprompts = [prompts[i % n_prompts] for i in range(len(responses))]
    reward.score(rprompts, responses)  # load the classifier
    clf_ids = [tok(r)["input_ids"] for r in responses]
    reward_tokens = sum(len(x) for x in clf_ids)

    def lolkit_reward():
        reward.score(rprompts, responses)

    @torch.no_grad()
    def bare_reward():
        for s in range(0, len(clf_ids), 16):
            chunk = clf_ids[s : s + 16]
            w = max(len(x) for x in chunk)
            i = torch.tensor([x + [pad] * (w - len(x)) for x in chunk])
            m = torch.tensor([[1] * len(x) + [0] * (w - len(x)) for x in chunk])
            clf(input_ids=i, attention_mask=m)

    runs = interleaved_runs({**gen_fns, "bare_reference": bare_reference,
                             "lolkit_reference": lolkit_reference, "bare_reward": bare_reward,
                             "lolkit_reward": lolkit_reward}, rounds, warmup=1)
    med = {k: statistics.median(v) for k, v in runs.items()}
    gen_tokens = n_prompts * new
    print(f"model {model_dir if args.model else 'Llama 256 x 4 (random)'}, vocab {model.config.vocab_size}, "
          f"{torch.get_num_threads()} thread(s), CPU fp32; {rounds} interleaved rounds")
    rows = [("eval generate (greedy)", "lolkit_eval", "direct_greedy", gen_tokens, "new tokens"),
            ("rollout sample_tokens", "lolkit_rollout", "direct_sample", gen_tokens, "new tokens"),
            ("reference pass", "lolkit_reference", "bare_reference", ref_tokens, "tokens"),
            ("reward pass (classifier)", "lolkit_reward", "bare_reward", reward_tokens, "tokens")]
    print(f"{'pass':<26} {'lolkit tok/s':>12} {'direct tok/s':>12} {'throughput ratio':>17}")
    ok = True
    for label, ours, theirs, n, unit in rows:
        ratio = paired_ratio(runs[theirs], runs[ours])  # lolkit throughput / direct throughput
        gate = ratio >= TARGET if "generate" in label or "sample" in label else None
        ok &= gate is not False
        tag = f"  (target >= {TARGET}) {verdict(gate)}" if gate is not None else ""
        print(f"{label:<26} {n / med[ours]:>12.0f} {n / med[theirs]:>12.0f} {ratio:>17.3f}{tag}  [{unit}]")
    print(f"generation throughput vs direct model.generate: {verdict(ok)}")


if __name__ == "__main__":
    main()
