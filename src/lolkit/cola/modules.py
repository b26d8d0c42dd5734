"""CoLA's three latent-action modules over a frozen causal LM (spec §4; Jia et al. 2025).

Shapes: B sequences, T positions, D = the base LM's hidden size, d = the modules' width, K actions.
``h`` [B, T, D] are the frozen base LM's final (normed) hidden states: ``lm_head(h)`` are its logits.
``valid`` [B, T] marks real (non-padding) positions; sequences may be left- or right-padded.

* :class:`InverseDynamics` (IDM): causal blocks over h → K-way head. Its output at position t + 1 (which
  has seen token x_{t+1}) is the action a_t that *explains* the step from state h_t to token x_{t+1}.
* :class:`WorldModel`: the action's code-book vector e(a_t) is merged into h_t by residual gated MLPs,
  h'_t = h_t + σ(W_g [h; e]) ⊙ W_2 gelu(W_1 [h; e]) (per block), and p(x_{t+1} | h_t, a_t) =
  softmax(lm_head(h'_t)) through the frozen LM head. W_2 starts at zero, so an untrained world model
  is exactly the base LM.
* :class:`LatentPolicy`: causal blocks over h → K-way head; π(a_t | h_≤t) at position t.

Nothing here runs the base LM; :func:`load_module` reads a module's file (checkpoints write them:
:class:`lolkit.checkpoint.ModuleWeights`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ColaConfig:
    """Sizes of the modules (stored in the run's ``cola.json``)."""

    hidden_size: int  # D, the base LM's
    num_actions: int = 64  # K
    width: int = 128  # d, of the causal blocks
    idm_layers: int = 2
    policy_layers: int = 2
    heads: int = 4
    world_blocks: int = 2  # residual gated MLPs
    world_hidden: int = 256  # their inner width
    action_dim: int = 64  # code-book vector size

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------------
def gumbel_straight_through(logits: torch.Tensor, tau: float = 1.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Gumbel-softmax with a straight-through one-hot (Jang et al. 2017), over the last axis.

    Forward: exactly one_hot(argmax(logits + g)). Backward: the gradient of the soft sample
    y = softmax((logits + g) / τ). Written as ``hard + (soft − sg(soft))`` so that the forward value is
    the one-hot *exactly* (x − x is exactly 0 in floating point; torch's ``hard − sg(soft) + soft`` can
    leave 1 − 1e-8). ``noise`` (g, Gumbel(0, 1)) is drawn from the global generator when not given;
    ``noise = 0`` gives the deterministic straight-through argmax.

    Golden: logits [0, ln 3], g = 0, τ = 1 → soft [0.25, 0.75], forward [0, 1];
    d(y·[1, 0])/dlogits = ∂soft_0 = soft_0 (e_0 − soft) = 0.25·[0.75, −0.75] = [0.1875, −0.1875]."""
    if noise is None:
        u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
        noise = -torch.log(-torch.log(u))
    soft = torch.softmax((logits + noise) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


def usage_entropy(probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """H(p̄) in nats, p̄ = the mean over valid positions of the per-position action distributions
    ``probs`` [..., K]: high when the code-book is used evenly (the anti-collapse term of stage 0).

    Golden: two positions with p = [1, 0] and [0, 1] → p̄ = [0.5, 0.5] → H = ln 2 = 0.6931."""
    w = valid.to(probs.dtype).unsqueeze(-1)
    mean = (probs * w).sum(dim=tuple(range(probs.dim() - 1))) / w.sum().clamp_min(1)
    return -(mean * torch.log(mean.clamp_min(1e-12))).sum()


def codebook_perplexity(counts: list[int] | torch.Tensor) -> float:
    """exp(H(usage)) of action counts: K when all K actions are used equally, 1 when one action is.

    Golden: counts [2, 1, 1, 0] → p = [0.5, 0.25, 0.25] → H = 1.5 ln 2 → perplexity 2^1.5 = 2.8284."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    p = c[c > 0] / c.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] boolean: query t may attend key s when s ≤ t and s is valid — and always itself, so
    a padding position never has an empty row (an all-masked softmax row is NaN, and 0 · NaN poisons
    the real rows that read it through the attention product)."""
    T = valid.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=valid.device)
    return ((causal[None] & valid[:, None, :].bool()) | eye[None]).unsqueeze(1)


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)). The base LM's hidden states
    carry position already (its rotary embeddings), so the blocks add none."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, W = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, W))
        return x + self.mlp(self.ln2(x))


class CausalHead(nn.Module):
    """h [B, T, D] → action logits [B, T, K]: a projection to the width, causal blocks, a K-way head."""

    def __init__(self, cfg: ColaConfig, layers: int):
        super().__init__()
        self.inp = nn.Linear(cfg.hidden_size, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(layers))
        self.ln = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.num_actions)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(valid)
        x = self.inp(h)
        for b in self.blocks:
            x = b(x, mask)
        return self.head(self.ln(x))


class InverseDynamics(CausalHead):
    """IDM. ``forward(h, valid)[:, t + 1]`` are the logits of a_t (the action explaining x_{t+1})."""

    def __init__(self, cfg: ColaConfig):
        super().__init__(cfg, cfg.idm_layers)


class LatentPolicy(CausalHead):
    """π(a_t | h_≤t): ``forward(h, valid)[:, t]`` are the logits of a_t."""

    def __init__(self, cfg: ColaConfig):
        super().__init__(cfg, cfg.policy_layers)


class GatedResidual(nn.Module):
    def __init__(self, hidden: int, action_dim: int, inner: int):
        super().__init__()
        self.up = nn.Linear(hidden + action_dim, inner)
        self.down = nn.Linear(inner, hidden)
        self.gate = nn.Linear(hidden + action_dim, hidden)
        nn.init.zeros_(self.down.weight)  # start as the identity: the world model begins as the base LM
        nn.init.zeros_(self.down.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        z = torch.cat([h, e], dim=-1)
        return h + torch.sigmoid(self.gate(z)) * self.down(F.gelu(self.up(z)))


class WorldModel(nn.Module):
    """p(x_{t+1} | h_t, a_t) through the frozen LM head (passed in, not owned: never saved with the module)."""

    def __init__(self, cfg: ColaConfig):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(cfg.num_actions, cfg.action_dim) / math.sqrt(cfg.action_dim))
        self.blocks = nn.ModuleList(GatedResidual(cfg.hidden_size, cfg.action_dim, cfg.world_hidden)
                                    for _ in range(cfg.world_blocks))

    def merge(self, h: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """h [..., D] and an action — one-hot (or straight-through) [..., K] or indices [...] — → h' [..., D]."""
        e = action.to(self.codebook.dtype) @ self.codebook if action.is_floating_point() else self.codebook[action]
        for b in self.blocks:
            h = b(h, e)
        return h

    def forward(self, h: torch.Tensor, action: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        return lm_head(self.merge(h, action))


# --------------------------------------------------------------------------------------------------
# files: safetensors + JSON, never pickle
# --------------------------------------------------------------------------------------------------
def load_module(module: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    from ..errors import LolkitError

    if not path.is_file():
        raise LolkitError(f"{path}: file not found (did the stage finish?)")
    try:
        module.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise LolkitError(f"{path}: does not fit the run's cola.json sizes ({' '.join(str(e).split())[:200]})") from None
    return module
