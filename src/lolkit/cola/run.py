"""A CoLA run directory and loading its modules back onto the base model.

Layout: each stage's folder is a run directory of lolkit's run lifecycle (:mod:`lolkit.run`: config.yaml,
run.json, metrics.jsonl, checkpoints/step-N and best/, final/ written atomically with a manifest), so a
killed stage resumes mid-way and never leaves a half-written module file::

    RUN/cola.json                       base model, corpus, sizes (ColaConfig), stage-0 settings
    RUN/cache/hidden-<key>.safetensors  the frozen base LM's hidden states of the corpus
    RUN/world/      final/{idm,world_model}.safetensors, metrics.jsonl, summary.json   (stage 0)
    RUN/policy_bc/  final/policy.safetensors, metrics.jsonl, summary.json              (stage 1)
    RUN/policy_rl/  final/policy.safetensors, metrics.jsonl, rollouts.jsonl, summary.json (latent RL)
    RUN/eval/       generations.jsonl, summary.json                                    (lolkit eval)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LolkitError
from .modules import ColaConfig, InverseDynamics, LatentPolicy, WorldModel, load_module

RUN_FORMAT = "lolkit-cola/1"
POLICIES = ("bc", "rl")


def is_cola_run(path: str | Path) -> bool:
    return (Path(path) / "cola.json").is_file()


def read_run(run: str | Path) -> dict:
    from ..io import read_json

    p = Path(run) / "cola.json"
    if not p.is_file():
        raise LolkitError(f"{run}: not a CoLA run directory (no cola.json: run `lolkit cola world` first)")
    info = read_json(p)
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise LolkitError(f"{p}: field 'format': expected {RUN_FORMAT!r}")
    try:
        info["config"] = ColaConfig(**info["config"])
    except (KeyError, TypeError) as e:
        raise LolkitError(f"{p}: field 'config': {e}") from None
    return info


def policy_dir(run: str | Path, which: str) -> Path:
    if which not in POLICIES:
        raise LolkitError(f"policy {which!r}: expected one of {', '.join(POLICIES)}")
    return Path(run) / f"policy_{which}"


def stage_final(folder: Path) -> Path:
    """Where a finished stage's modules are: its ``final/``."""
    return Path(folder) / "final"


def latest_policy(run: str | Path) -> str:
    """``rl`` when latent RL has finished, else ``bc``."""
    return "rl" if (stage_final(policy_dir(run, "rl")) / "policy.safetensors").is_file() else "bc"


@dataclass
class Cola:
    """The frozen base (model, tokenizer) with the run's modules, all in eval mode."""

    base: object
    tokenizer: object
    config: ColaConfig
    idm: InverseDynamics
    world: WorldModel
    info: dict

    @property
    def lm_head(self):
        return self.base.get_output_embeddings()

    def policy(self, which: str) -> LatentPolicy:
        folder = stage_final(policy_dir(self.info["run"], which))
        check_stage(folder)
        return load_module(LatentPolicy(self.config), folder / "policy.safetensors").eval()


def check_stage(folder: Path) -> None:
    """A stage's modules are read only when their manifest verifies."""
    from ..io import MANIFEST, verify_manifest

    if (folder / MANIFEST).is_file():
        problem = verify_manifest(folder)
        if problem:
            raise LolkitError(f"{folder}: fails verification ({problem}); run its stage again with --overwrite")


def load_cola(run: str | Path, device: str = "cpu") -> Cola:
    """Load the base model named in ``cola.json`` and the stage-0 modules (IDM, world model) onto it."""
    from ..models import ModelConfig, load_model

    info = read_run(run)
    info["run"] = str(run)
    base, tok, _ = load_model(ModelConfig(name=info["model"]), trainable=False, device=device)
    cfg = info["config"]
    if base.config.hidden_size != cfg.hidden_size:
        raise LolkitError(f"{Path(run) / 'cola.json'}: field 'config.hidden_size': {cfg.hidden_size}, but the base "
                          f"model {info['model']} has {base.config.hidden_size}")
    world_dir = stage_final(Path(run) / "world")
    check_stage(world_dir)
    idm = load_module(InverseDynamics(cfg), world_dir / "idm.safetensors").to(device).eval()
    world = load_module(WorldModel(cfg), world_dir / "world_model.safetensors").to(device).eval()
    return Cola(base, tok, cfg, idm, world, info)
