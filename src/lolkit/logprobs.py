"""Token and sequence log-probabilities of response tokens, in one forward pass.

``token_logps[b, t] = log π(input_ids[b, t+1] | input_ids[b, :t+1])`` on response positions (0
elsewhere); the sequence log-prob is its masked **sum** (spec: log p(y|x) = Σ_t m_t log π(y_t|·)).
Log-softmax runs in float32 over chunks of rows, so the full [B, L, V] float32 log-softmax is never
materialised.
"""

from __future__ import annotations

import torch


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """``log_softmax(logits)[..., targets]`` for logits [N, V] and targets [N], chunked over N."""
    out = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
    for s in range(0, logits.shape[0], chunk_rows):
        block = logits[s : s + chunk_rows].float()
        out[s : s + chunk_rows] = block.gather(-1, targets[s : s + chunk_rows, None]).squeeze(-1) - torch.logsumexp(block, -1)
    return out


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs [B, L-1] of the response tokens (zeros elsewhere) from logits [B, L, V]."""
    mask = response_mask.bool()
    targets = input_ids[:, 1:]
    shifted = logits[:, :-1]
    token_logps = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    token_logps[mask] = gather_logprobs(shifted[mask], targets[mask])
    return token_logps


def forward_logprobs(model, batch, *, output_hidden_states: bool = False):
    """Run the model once on a :class:`~lolkit.data.tokenize.Batch`.

    Returns ``(seq_logps [B], token_logps [B, L-1], outputs)``.
    """
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False,
                output_hidden_states=output_hidden_states)
    token_logps = response_logprobs(out.logits, batch.input_ids, batch.response_mask)
    return token_logps.sum(-1), token_logps, out
