"""lolkit: fine-tune language models with rewards (offline RL, preference optimisation, online RL)."""

__version__ = "0.1.0"
