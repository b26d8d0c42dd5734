"""Online RL for language models: PPO and NLPO (spec §3; docs/online.md).

* :mod:`lolkit.online.policy`  — value head, reference, rollout batches, the policy forward pass
* :mod:`lolkit.online.nlpo`    — NLPO's nucleus mask, its mask policy (really refreshed) and logits processor
* :mod:`lolkit.rl`, :mod:`lolkit.losses.ppo` — pure functions: GAE, whitening, KL controller; the PPO losses
* :mod:`lolkit.online.trainer` — the loop: rollout → reward → GAE → PPO epochs → KL controller
"""

