"""Latent-action control (CoLA; Jia et al. 2025, "Controlling Large Language Model with Latent Action").

Over a frozen causal LM: an inverse-dynamics model, a language world model and a policy over K latent
actions (:mod:`.modules`); stage 0 / stage 1 training (:mod:`.train`), latent-action generation
(:mod:`.generate`), latent RL (:mod:`.rl`) and the quality-diversity comparison (:mod:`.evaluate`).
See docs/cola.md.
"""
