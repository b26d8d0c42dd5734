"""Token and sequence log-probabilities of response tokens, in one forward pass.

``token_logps[b, t] = log π(input_ids[b, t+1] | input_ids[b, :t+1])`` on response positions (0
elsewhere); the sequence log-prob is its masked **sum** (spec: log p(y|x) = Σ_t m_t log π(y_t|·)).

The [B, L, V] logits are never materialised: the model runs with ``logits_to_keep`` set so that its
LM head projects no position, its last hidden state is taken, the response positions are selected,
and they go through the LM head in chunks of rows, with log-softmax in float32
(:func:`head_logprobs`). With gradients, each chunk's logits are recomputed in the backward pass
instead of being kept (one extra LM-head matmul over the response rows), so memory holds [N, H]
hidden rows rather than [N, V] logits. Models this does not apply to (a non-linear or adapted LM
head, soft-capped or scaled logits, no ``logits_to_keep``) fall back to the logits of the response
positions only, or to the full logits.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Elements of one chunk of float32 logits (rows × vocabulary): 2^24 = 64 MiB.
CHUNK_ELEMENTS = 1 << 24
# The same for row_statistics, whose functions (entropy, a nucleus mask, a KL) hold several temporaries the
# size of a chunk at once: 2^22 = 16 MiB of logits per chunk.
STAT_CHUNK_ELEMENTS = 1 << 22


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """``log_softmax(logits)[..., targets]`` for logits [N, V] and targets [N], chunked over N."""
    out = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
    for s in range(0, logits.shape[0], chunk_rows):
        block = logits[s : s + chunk_rows].float()
        out[s : s + chunk_rows] = block.gather(-1, targets[s : s + chunk_rows, None]).squeeze(-1) - torch.logsumexp(block, -1)
    return out


def _chunk_rows(vocab: int, chunk_rows: int | None) -> int:
    return chunk_rows or max(1, CHUNK_ELEMENTS // max(1, vocab))


class _HeadLogprobs(torch.autograd.Function):
    """log_softmax(hidden @ Wᵀ + b)[targets] by chunks of rows; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows):
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, rows):
            logits = F.linear(hidden[s : s + rows], weight, bias).float()
            lse[s : s + rows] = torch.logsumexp(logits, -1)
            out[s : s + rows] = logits.gather(-1, targets[s : s + rows, None]).squeeze(-1) - lse[s : s + rows]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight) if need_w else None
        gb = torch.zeros_like(bias) if (need_b and bias is not None) else None
        grad = grad.float()
        rows = ctx.rows
        for s in range(0, hidden.shape[0], rows):
            h, g = hidden[s : s + rows], grad[s : s + rows]
            # d logp_i / d logits_i = onehot(t_i) − softmax_i
            d = F.linear(h, weight, bias).float().sub_(lse[s : s + rows, None]).exp_().mul_(-g[:, None])
            d.scatter_add_(1, targets[s : s + rows, None], g[:, None])
            d = d.to(hidden.dtype)
            if gh is not None:
                gh[s : s + rows] = d @ weight
            if gw is not None:
                gw.addmm_(d.t(), h)
            if gb is not None:
                gb += d.sum(0)
        return gh, gw, gb, None, None


def head_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                  chunk_rows: int | None = None, *, extra_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``log_softmax(head(hidden) + extra_bias)[targets]`` in float32 for hidden [N, H] and targets [N],
    never holding more than ``chunk_rows`` rows of logits (default: 2^24 elements' worth).
    ``extra_bias`` [V]: a bias the model adds after its head (BART's ``final_logits_bias``)."""
    rows = _chunk_rows(head.out_features, chunk_rows)
    bias = head.bias
    if extra_bias is not None:
        bias = extra_bias.to(head.weight.dtype) if bias is None else bias + extra_bias.to(bias.dtype)
    if torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad):
        if hidden.shape[0] <= rows:  # one chunk: plain autograd, no recomputation
            return gather_logprobs(F.linear(hidden, head.weight, bias), targets, chunk_rows=rows)
        return _HeadLogprobs.apply(hidden, head.weight, bias, targets, rows)
    with torch.no_grad():
        out = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], rows):
            out[s : s + rows] = gather_logprobs(F.linear(hidden[s : s + rows], head.weight, bias),
                                                targets[s : s + rows], chunk_rows=rows)
        return out


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs [B, L-1] of the response tokens (zeros elsewhere) from logits [B, L, V]."""
    mask = response_mask.bool()
    targets = input_ids[:, 1:]
    shifted = logits[:, :-1]
    token_logps = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    token_logps[mask] = gather_logprobs(shifted[mask], targets[mask])
    return token_logps


_KEEPS: dict[type, bool] = {}


def _takes_logits_to_keep(model) -> bool:
    cls = type(model)
    if cls not in _KEEPS:
        try:
            _KEEPS[cls] = "logits_to_keep" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            _KEEPS[cls] = False
    return _KEEPS[cls]


def unwrap(model):
    """The Hugging Face model inside DistributedDataParallel and peft wrappers."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(inner, "get_base_model") and hasattr(inner, "peft_config"):
        inner = inner.get_base_model()
    return inner


def _head_and_body(model):
    """(the HF causal LM inside DDP / peft wrappers, its LM head, its body) when the chunked head path
    applies, else (the causal LM or None, None, None)."""
    inner = unwrap(model)
    if not hasattr(inner, "get_output_embeddings") or not _takes_logits_to_keep(inner):
        return None, None, None
    conf = getattr(inner, "config", None)
    if any(getattr(conf, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale",
                                                                    "logits_scaling", "output_multiplier_scale")):
        return inner, None, None
    head = inner.get_output_embeddings()
    body = getattr(inner, "base_model", None)
    # under DeepSpeed ZeRO-3 the head's weight is whole only inside the model's forward
    if type(head) is not torch.nn.Linear or body is None or body is inner or hasattr(head.weight, "ds_id"):
        return inner, None, None
    return inner, head, body


@dataclass
class ResponseRows:
    """One forward pass, kept at its response rows only (N = the response tokens of the batch, in row-major
    order of ``mask``): the final hidden states [N, H] with the LM head that turns them into logits — or,
    for models whose head cannot run outside them, the logits [N, V] of those rows — and the targets [N]."""

    hidden: torch.Tensor | None  # [N, H]; None when the head path does not apply and none were asked for
    head: torch.nn.Linear | None
    logits: torch.Tensor | None
    targets: torch.Tensor  # [N] the token each row predicts
    mask: torch.Tensor  # [B, L-1] bool, aligned with the shifted targets
    outputs: object
    extra_bias: torch.Tensor | None = None  # [V] added after the head (BART's final_logits_bias)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def vocab(self) -> int:
        return self.head.out_features if self.head is not None else int(self.logits.shape[-1])

    def token_logprobs(self) -> torch.Tensor:
        """log π(target) of every row [N], float32 (chunked through the head, see :func:`head_logprobs`)."""
        if self.head is not None:
            return head_logprobs(self.hidden, self.head, self.targets, extra_bias=self.extra_bias)
        return gather_logprobs(self.logits, self.targets)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of rows ``x``: hidden states [n, H] through the head, or rows of ``logits`` as they are."""
        if self.head is None:
            return x
        logits = F.linear(x, self.head.weight, self.head.bias)
        return logits if self.extra_bias is None else logits + self.extra_bias.to(logits.dtype)

    def logits_at(self, rows: slice) -> torch.Tensor:
        """The float32 logits [n, V] of a slice of the rows."""
        return self.project((self.hidden if self.head is not None else self.logits)[rows]).float()

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """[N] values back to the [B, L-1] layout of ``mask`` (0 elsewhere)."""
        out = torch.zeros(self.mask.shape, dtype=values.dtype, device=values.device)
        return out.masked_scatter(self.mask, values)


def response_rows(model, batch, *, output_hidden_states: bool = False) -> ResponseRows:
    """Run the model once on ``batch`` (``input_ids``, ``attention_mask``, ``response_mask`` [B, L-1] and,
    for left-padded batches, ``position_ids``) and keep its response rows: the [B, L, V] logits are never
    built where the LM head can run on the rows alone. An encoder–decoder model reads the same batch: its
    prompt goes to the encoder and its response to the decoder (:func:`seq2seq_inputs`); the rows are the
    decoder's."""
    if getattr(unwrap(model).config, "is_encoder_decoder", False):
        return _seq2seq_rows(model, batch, output_hidden_states)
    mask = batch.response_mask.bool()
    targets = batch.input_ids[:, 1:][mask]
    inner, head, body = _head_and_body(model)
    kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "use_cache": False,
          "output_hidden_states": output_hidden_states}
    if getattr(batch, "position_ids", None) is not None:
        kw["position_ids"] = batch.position_ids
    if head is not None:
        captured: list[torch.Tensor] = []
        hook = body.register_forward_hook(lambda mod, args, out: captured.append(out[0]))
        try:
            # keep the logits of no position: the LM head runs on the response rows only
            out = model(**kw, logits_to_keep=torch.zeros_like(batch.input_ids, dtype=torch.bool))
        finally:
            hook.remove()
        return ResponseRows(captured[-1][:, :-1][mask], head, None, targets, mask, out)
    if inner is not None:  # the model's own head, on the response positions only
        keep = torch.zeros_like(batch.input_ids, dtype=torch.bool)
        keep[:, :-1] = mask
        out = model(**kw, logits_to_keep=keep)
        logits = out.logits
    else:
        out = model(**kw)
        logits = out.logits[:, :-1][mask]
    hidden = out.hidden_states[-1][:, :-1][mask] if output_hidden_states else None
    return ResponseRows(hidden, None, logits, targets, mask, out)


def forward_logprobs(model, batch, *, output_hidden_states: bool = False):
    """Run the model once on a :class:`~lolkit.data.tokenize.Batch`.

    Returns ``(seq_logps [B], token_logps [B, L-1], outputs)``; ``outputs.logits`` holds the logits
    of no position, or of the response positions only, unless the model needs the full path.
    """
    rows = response_rows(model, batch, output_hidden_states=output_hidden_states)
    token_logps = rows.scatter(rows.token_logprobs())
    return token_logps.sum(-1), token_logps, rows.outputs


def row_statistics(rows: ResponseRows, fn, *, chunk_rows: int | None = None) -> tuple[torch.Tensor, ...]:
    """``fn(logits [n, V] float32, rows slice) → tuple of [n] tensors``, applied to the response rows
    chunk by chunk and concatenated: the entropy, a masked distribution's log-probs, a KL — whatever needs
    the whole vocabulary of a row. With gradients, a chunk's logits are not kept for the backward pass but
    recomputed there (activation checkpointing), so memory holds one chunk of logits at a time, never
    [N, V]; rows that fit in one chunk take plain autograd (no recomputation: small vocabularies and
    batches pay nothing). ``fn`` must be deterministic (it runs again in the backward pass)."""
    from torch.utils.checkpoint import checkpoint

    size = chunk_rows or max(1, STAT_CHUNK_ELEMENTS // max(1, rows.vocab))
    source = rows.hidden if rows.head is not None else rows.logits
    grad = torch.is_grad_enabled() and (source.requires_grad or (rows.head is not None and rows.head.weight.requires_grad))
    n = len(rows)

    def run(x: torch.Tensor, sl: slice):
        return fn(rows.project(x).float(), sl)

    parts = []
    for s in range(0, max(n, 1), size):
        sl = slice(s, min(s + size, n))
        x = source[sl]
        parts.append(checkpoint(run, x, sl, use_reentrant=False) if grad and n > size else run(x, sl))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v over the last axis, float32; −inf logits (masked actions) contribute 0."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) = Σ_{v < V_ref} p_ref(v) (log p_ref(v) − log p_θ(v)) over the last axis.

    p_θ is normalised over its whole vocabulary (V ≥ V_ref: Quark's control tokens included); the sum runs
    over the reference vocabulary, where p_ref lives."""
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)[..., : ref_logp.shape[-1]]
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)



# Encoder–decoder families whose logits are ``lm_head(x)`` of what reaches the head (T5 scales the decoder
# state before it: the hook sees the scaled state), plus ``final_logits_bias`` where the model has one.
# Any other encoder–decoder model gets its own logits over the decoder (= response) positions.
SEQ2SEQ_HEADS = ("t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "marian", "m2m_100", "blenderbot")


def decoder_start_id(model) -> int:
    """The token an encoder–decoder model's decoder starts from: the generation config's (which
    :func:`lolkit.models.load_model` sets from the model's files), else the model config's."""
    inner = unwrap(model)
    gen = getattr(inner, "generation_config", None)
    for source in (gen, inner.config):
        value = getattr(source, "decoder_start_token_id", None)
        if value is not None:
            return int(value)
    raise ValueError("the model has no decoder_start_token_id (lolkit.models.load_model checks it)")


def seq2seq_inputs(batch, pad_id: int, start_id: int) -> dict[str, torch.Tensor]:
    """A concatenated batch (prompt then response on each row, ``response_mask`` on the response's
    targets) as encoder–decoder inputs: the prompt tokens (the attended tokens before the response,
    wherever the row's padding is: the offline :class:`~lolkit.data.tokenize.Batch` pads on the right,
    a rollout's prompt on the left), right-padded, for the encoder; the response tokens (the targets on
    ``response_mask``, in order, EOS included) as ``labels``, right-padded, and behind the start token as
    ``decoder_input_ids``. ``decoder_attention_mask`` is given explicitly: T5 starts from its pad token,
    which the model's default mask would hide."""
    mask = batch.response_mask.bool()
    ids = batch.input_ids
    dev = ids.device
    response_at = torch.cat([torch.zeros_like(mask[:, :1]), mask], 1)  # input positions holding a response token
    prompt_at = batch.attention_mask.bool() & ~response_at
    plens, rlens = prompt_at.sum(1), mask.sum(1)
    enc_mask = torch.arange(max(1, int(plens.max())), device=dev)[None] < plens[:, None]
    dec_mask = torch.arange(max(1, int(rlens.max())), device=dev)[None] < rlens[:, None]
    encoder = torch.full(enc_mask.shape, pad_id, dtype=ids.dtype, device=dev)
    encoder[enc_mask] = ids[prompt_at]
    labels = torch.full(dec_mask.shape, pad_id, dtype=ids.dtype, device=dev)
    labels[dec_mask] = ids[:, 1:][mask]
    start = torch.full((ids.shape[0], 1), start_id, dtype=ids.dtype, device=dev)
    return {"input_ids": encoder, "attention_mask": enc_mask.long(),
            "decoder_input_ids": torch.cat([start, labels[:, :-1]], 1), "decoder_attention_mask": dec_mask.long(),
            "labels": labels}


def _seq2seq_rows(model, batch, output_hidden_states: bool) -> ResponseRows:
    """:func:`response_rows` for an encoder–decoder model: one forward; what reaches the LM head at the
    decoder's positions is kept (the head itself projects none of them), or, for a model outside
    ``SEQ2SEQ_HEADS``, its logits at the decoder's positions. Rows in response order, as the causal path's."""
    inner = unwrap(model)
    pad = inner.config.pad_token_id
    inputs = seq2seq_inputs(batch, 0 if pad is None else int(pad), decoder_start_id(inner))
    labels, dec_mask = inputs.pop("labels"), inputs["decoder_attention_mask"].bool()
    kw = {**inputs, "use_cache": False, "output_hidden_states": output_hidden_states}
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    mask, targets = batch.response_mask.bool(), labels[dec_mask]
    if type(head) is torch.nn.Linear and getattr(inner.config, "model_type", None) in SEQ2SEQ_HEADS:
        captured: list[torch.Tensor] = []

        def take(module, args):  # keep what reaches the head, and let the head project no position
            captured.append(args[0])
            return (args[0][:, :0],)

        hook = head.register_forward_pre_hook(take)
        try:
            out = model(**kw)
        finally:
            hook.remove()
        bias = getattr(inner, "final_logits_bias", None)
        return ResponseRows(captured[-1][dec_mask], head, None, targets, mask, out,
                            None if bias is None else bias.reshape(-1))
    out = model(**kw)
    hidden = out.decoder_hidden_states[-1][dec_mask] if output_hidden_states else None
    return ResponseRows(hidden, None, out.logits[dec_mask], targets, mask, out)
