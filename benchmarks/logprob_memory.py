"""Peak memory of the response log-prob computation: lolkit (hidden states through the LM head in
chunks) vs full logits, for long sequences and a 50k+ vocabulary (target: ≥ 2× lower), with the
values compared.

A 2-layer Llama (hidden 256, vocabulary 50,304) scores 2 sequences of 1,024 tokens (128 prompt +
896 response), CPU fp32. Variants:

* full       model(...).logits [B, L, V] → log_softmax over the vocabulary → gather (the usual way;
             what TRL's DPOTrainer and the published A-LoL code do)
* chunked-ls model(...).logits [B, L, V] → lolkit's chunked log-softmax (`gather_logprobs`, lolkit
             before this benchmark: the logits themselves are still materialised)
* lolkit     `lolkit.logprobs.forward_logprobs`: the last hidden state, response rows only, through
             the LM head in chunks of 2^24 logits; with gradients each chunk is recomputed in backward

Each is run in two modes: `no_grad` (the reference pass) and `grad` (forward + backward of a
training step). Method: every (variant, mode) runs in its own forked child process (one torch
thread, so no OpenMP pool crosses the fork). The child loads the model, builds the batch, runs the
computation once on a short batch (so code pages and one-off buffers are already resident), resets
its peak RSS (`echo 5 > /proc/self/clear_refs`), reads its RSS, runs the computation once and reads
the peak (VmHWM in /proc/self/status); the figure is peak − before, the memory the computation
itself added. (`tracemalloc` does not see torch's allocations and torch's CPU allocator keeps no peak
statistics; large CPU tensors are mmap-ed and returned to the OS on free, so RSS follows them.) The
children save their token log-probs (and a slice of the gradients) and the parent compares them.
Usage: python benchmarks/logprob_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import in_fork, memory_setup, proc_status, reset_peak, verdict  # noqa: E402

TARGET = 2.0
VARIANTS = ("full", "chunked-ls", "lolkit")


def child(variant: str, mode: str, model_dir: str, out: str, batch: int, length: int, prompt: int) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from lolkit.data.tokenize import Encoded, collate
    from lolkit.logprobs import forward_logprobs, gather_logprobs

    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train(mode == "grad").requires_grad_(mode == "grad")
    g = torch.Generator().manual_seed(0)
    items = [Encoded(tuple(torch.randint(2, model.config.vocab_size, (prompt,), generator=g).tolist()),
                     tuple(torch.randint(2, model.config.vocab_size, (length - prompt,), generator=g).tolist()), False)
             for _ in range(batch)]
    short = collate([Encoded(e.prompt_ids[:4], e.response_ids[:12], False) for e in items], range(batch), 0)
    full = collate(items, range(batch), 0)

    def run(b):
        mask = b.response_mask.bool()
        targets = b.input_ids[:, 1:]
        if variant == "lolkit":
            return forward_logprobs(model, b)[1]
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits[:, :-1]
        if variant == "full":
            return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1) * mask
        tok = torch.zeros(targets.shape)
        tok[mask] = gather_logprobs(logits[mask], targets[mask])
        return tok

    import gc

    def once(b):
        with torch.set_grad_enabled(mode == "grad"):
            tok = run(b)
            if mode == "grad":
                tok.sum().backward()
        return tok

    once(short)
    model.zero_grad(set_to_none=False)  # gradient buffers exist before the measurement, as in training
    gc.collect()
    before = reset_peak()
    tok = once(full)
    peak = proc_status("VmHWM")
    saved = {"tok": tok.detach()}
    if mode == "grad":
        saved["grad_head"] = model.lm_head.weight.grad[:64].clone()
        saved["grad_embed"] = model.model.embed_tokens.weight.grad[:64].clone()
    torch.save(saved, out + ".pt")
    Path(out + ".json").write_text(json.dumps({"before": before, "peak": peak, "added": peak - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one sequence of 1,024 tokens instead of two")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--length", type=int, default=1024)
    args = ap.parse_args()
    import torch

    tmp, model_dir = memory_setup("lolkit-mem-", args.vocab)
    batch, prompt = (1 if args.quick else 2), 128
    print(f"Llama 2 x 256, vocabulary {args.vocab}; batch {batch} x {args.length} tokens ({prompt} prompt, "
          f"{args.length - prompt} response); logits would be {batch * args.length * args.vocab * 4 / 2**20:.0f} MiB fp32")
    print(f"{'mode':<8} {'variant':<11} {'added peak RSS':>15} {'vs lolkit':>10} {'max |Δ logp| vs full':>21}")
    ok = True
    for mode in ("no_grad", "grad"):
        res, tensors = {}, {}
        for v in VARIANTS:
            out = str(tmp / f"{mode}-{v}")
            in_fork(child, v, mode, str(model_dir), out, batch, args.length, prompt, what=f"the {v} / {mode} child")
            res[v] = json.loads(Path(out + ".json").read_text())
            tensors[v] = torch.load(out + ".pt")
        for v in VARIANTS:
            diff = max((tensors[v][k] - tensors["full"][k]).abs().max().item() for k in tensors[v])
            print(f"{mode:<8} {v:<11} {res[v]['added'] / 2**20:>11.0f} MiB {res[v]['added'] / res['lolkit']['added']:>9.2f}x"
                  f" {diff:>21.2e}")
        ratio = res["full"]["added"] / res["lolkit"]["added"]
        ok &= ratio >= TARGET
        print(f"  {mode}: full logits / lolkit peak memory = {ratio:.2f}x  (target >= {TARGET}) "
              f"{verdict(ratio >= TARGET)}; chunked log-softmax alone: "
              f"{res['full']['added'] / res['chunked-ls']['added']:.2f}x")
    print(f"overall {verdict(ok)}")


if __name__ == "__main__":
    main()
