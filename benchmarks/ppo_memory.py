"""Peak memory of one PPO (and NLPO) minibatch at a 50k vocabulary: the policy pass of the online loop
through lolkit's response-row path (`lolkit.online.policy.policy_forward`: the LM head on the response
rows only, in chunks; NLPO's nucleus mask and the entropy chunked too) against the full-logits pass the
loop used before (target: before / after >= 2x), with the values compared (target: equal to 1e-6, relative
to the largest value of each tensor).

A 2-layer Llama (hidden 256, vocabulary 50,304) and a rollout minibatch of 8 sequences (64 prompt tokens,
left-padded to varied lengths, + 128 response tokens), CPU fp32. One minibatch = the policy pass (log-probs,
unmasked log-probs, entropy, values from a shared value head), PPO's clipped policy loss + 0.5 · value
loss − 0.01 · entropy, and the backward pass. Variants:

* before  the forward lolkit's online loop had before this benchmark: model(...).logits [B, L, V] of
          every position, the response positions sliced, log-softmax / entropy / (NLPO) the mask
          policy's nucleus over [B, T, V] tensors
* lolkit  `policy_forward`: `lolkit.logprobs.response_rows` + `row_statistics`

Each (variant, mode) runs in its own forked child with one torch thread, as benchmarks/logprob_memory.py
does: warm up on a short batch, reset the peak RSS, run the minibatch once, read the peak (VmHWM); the
figure is peak − before. Children save their outputs (safetensors) and the parent compares them.
Usage: python benchmarks/ppo_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import in_fork, memory_setup, proc_status, reset_peak, verdict  # noqa: E402

TARGET = 2.0
TOLERANCE = 1e-6
VARIANTS = ("before", "lolkit")
MODES = ("ppo", "nlpo")
TOP_P = 0.9


def before_forward(policy, head, batch, mask_model):
    """The online loop's policy pass before the response-row path: full logits of every position."""
    import torch

    from lolkit.logprobs import gather_logprobs, token_entropy
    from lolkit.online.nlpo import nucleus_mask

    P, T = batch.prompt_width, batch.actions.shape[1]

    def run(model, hidden: bool):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=False, output_hidden_states=hidden)
        return out.logits[:, P - 1 : P - 1 + T], (out.hidden_states[-1][:, P - 1 : P - 1 + T] if hidden else None)

    def token_logps(logits):
        B, T_, V = logits.shape
        return gather_logprobs(logits.reshape(B * T_, V), batch.actions.reshape(B * T_)).view(B, T_)

    keep = None
    if mask_model is not None:
        with torch.no_grad():
            keep = nucleus_mask(run(mask_model, False)[0], TOP_P).scatter(-1, batch.actions[..., None], True)
    logits, h = run(policy, True)
    logits = logits.float()
    raw = token_logps(logits)
    masked = logits.masked_fill(~keep, float("-inf")) if keep is not None else logits
    logps = token_logps(masked) if keep is not None else raw
    return logps, raw, token_entropy(masked), head(h)


def child(variant: str, mode: str, model_dir: str, out: str, batch: int, prompt: int, response: int) -> None:
    import gc

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from lolkit.losses.ppo import policy_loss, value_loss
    from lolkit.online.nlpo import MaskPolicy
    from lolkit.online.policy import ValueHead, build_batch, policy_forward

    torch.set_num_threads(1)
    policy = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    head = ValueHead(policy.config.hidden_size)
    torch.nn.init.normal_(head.linear.weight, std=0.02)  # not the zero start: its gradient reaches the trunk
    names = [n for n, _ in policy.named_parameters()]
    mask = MaskPolicy(policy, names, TOP_P, 1) if mode == "nlpo" else None
    g = torch.Generator().manual_seed(0)
    V = policy.config.vocab_size

    def rollout(b: int, p: int, t: int):
        prompts = [torch.randint(2, V, (p - 3 * (k % 4),), generator=g).tolist() for k in range(b)]
        responses = [torch.randint(2, V, (t - 5 * (k % 3),), generator=g).tolist() for k in range(b)]
        rb = build_batch(prompts, responses, 0, "cpu")
        T = rb.mask.shape[1]
        return rb, torch.randn(b, T, generator=g), torch.randn(b, T, generator=g)

    def once(rb, advantages, returns):
        if variant == "lolkit":
            f = policy_forward(policy, head, rb, mask=mask)
            logps, raw, ent, values = f.logps, f.raw_logps, f.entropy, f.values
        else:
            logps, raw, ent, values = before_forward(policy, head, rb, mask.model if mask is not None else None)
        m = rb.mask
        pol = policy_loss(logps, logps.detach(), advantages, m, 0.2)
        val = value_loss(values, values.detach(), returns, m)
        per_token = pol.losses + 0.5 * val.losses - 0.01 * ent * m
        (per_token.sum() / m.sum()).backward()
        return {"logps": logps * m, "raw_logps": raw * m, "entropy": ent * m, "values": values * m}

    once(*rollout(2, 6, 10))  # warm-up: code pages and one-off buffers resident
    policy.zero_grad(set_to_none=False)  # gradient buffers exist before the measurement, as in training
    head.zero_grad(set_to_none=False)
    full = rollout(batch, prompt, response)
    gc.collect()
    before = reset_peak()
    outs = once(*full)
    peak = proc_status("VmHWM")
    saved = {k: v.detach().contiguous() for k, v in outs.items()}
    saved["grad_head"] = policy.lm_head.weight.grad[:64].clone()
    saved["grad_embed"] = policy.model.embed_tokens.weight.grad[:64].clone()
    saved["grad_value_head"] = head.linear.weight.grad.clone()
    save_file(saved, out + ".safetensors")
    Path(out + ".json").write_text(json.dumps({"before": before, "peak": peak, "added": peak - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 sequences instead of 8 (a smoke test)")
    ap.add_argument("--vocab", type=int, default=50304)
    args = ap.parse_args()
    from safetensors.torch import load_file

    tmp, model_dir = memory_setup("lolkit-ppo-mem-", args.vocab)
    batch, prompt, response = (2 if args.quick else 8), 64, 128
    print(f"Llama 2 x 256, vocabulary {args.vocab}; one PPO minibatch of {batch} x ({prompt} prompt + {response} "
          f"response) tokens; full logits would be {batch * (prompt + response) * args.vocab * 4 / 2**20:.0f} MiB fp32")
    print(f"{'mode':<6} {'variant':<8} {'added peak RSS':>15} {'vs lolkit':>10}")
    ok = True
    for mode in MODES:
        res, tensors = {}, {}
        for v in VARIANTS:
            out = str(tmp / f"{mode}-{v}")
            in_fork(child, v, mode, str(model_dir), out, batch, prompt, response, what=f"the {v} / {mode} child")
            res[v] = json.loads(Path(out + ".json").read_text())
            tensors[v] = load_file(out + ".safetensors")
        for v in VARIANTS:
            print(f"{mode:<6} {v:<8} {res[v]['added'] / 2**20:>11.0f} MiB {res[v]['added'] / res['lolkit']['added']:>9.2f}x")
        ratio = res["before"]["added"] / res["lolkit"]["added"]
        values = max(_relative(tensors, k) for k in ("logps", "raw_logps", "entropy", "values"))
        grads = max(_relative(tensors, k) for k in ("grad_head", "grad_embed", "grad_value_head"))
        memory_ok = ratio >= TARGET or args.quick  # the quick sizes are a smoke test: too small for the target
        ok &= memory_ok and values <= TOLERANCE
        target = "not judged at --quick sizes" if args.quick else f"target >= {TARGET}) {verdict(ratio >= TARGET)}"
        print(f"  {mode}: before / lolkit peak memory = {ratio:.2f}x ({target}; max |Δ| / max |x| of log-probs, "
              f"entropy, values = {values:.1e} (target <= {TOLERANCE:g}) {verdict(values <= TOLERANCE)}; "
              f"of the gradients {grads:.1e}")
    print(f"overall {verdict(ok)}")


def _relative(tensors: dict, key: str) -> float:
    """max |before − lolkit| / max |before| of one saved tensor."""
    a, b = tensors["before"][key], tensors["lolkit"][key]
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


if __name__ == "__main__":
    main()
