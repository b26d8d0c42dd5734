"""Experiment trackers for training runs, through Accelerate's tracker classes (``report_to``).

``report_to: [tensorboard, wandb, mlflow, trackio]`` (``lolkit train --report-to tensorboard,wandb``)
sends every row of ``metrics.jsonl`` to each tracker, logs the resolved config once as the run's
hyper-parameters, and ``lolkit eval`` adds the eval summary (``eval/<metric>``) at the last step.
``metrics.jsonl`` stays the record lolkit itself reads; trackers are views of it. Each tracker
works without a network by default:

* ``tensorboard`` — event files in ``RUN/tensorboard``;
* ``wandb`` — an offline run in ``RUN/wandb`` (``wandb sync RUN/wandb/offline-run-*`` uploads it
  later); ``WANDB_MODE=online`` streams instead;
* ``mlflow`` — a file store in ``RUN/mlruns`` (``mlflow ui --backend-store-uri RUN/mlruns``), unless
  ``MLFLOW_TRACKING_URI`` names another store or server;
* ``trackio`` — trackio's local database (``TRACKIO_DIR``, default in the Hugging Face cache);
  ``trackio show --project lolkit``.

The tracker runs' ids are kept in ``RUN/trackers.json``, so a resumed run and its evaluation
continue the same tracker run. Only the main process opens trackers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import LolkitError

# tracker → (module that must be importable, lolkit extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}
PROJECT = "lolkit"


def check_trackers(names: list[str]) -> None:
    """Unknown or uninstalled trackers fail before a run starts, with the extra to install."""
    for name in names:
        if name not in TRACKERS:
            raise LolkitError(f"report_to: unknown tracker {name!r} (choose from: {', '.join(TRACKERS)})")
    for name in names:
        module, extra = TRACKERS[name]
        if not installed(module):
            raise LolkitError(f"report_to: {name} is not installed; pip install 'lolkit[{extra}]'")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def loss_views(loss_sum: float, sequences: float, tokens: float) -> dict[str, float]:
    """The training loss summed over a step's units, per sequence and per response token, under names
    every loop shares: ``loss_per_seq`` (per training unit: a response; a pair for DPO, a ranking for
    PRO) and ``loss_per_token`` (per response token of those units; the scale of ``val_nll``)."""
    return {"loss_per_seq": loss_sum / max(sequences, 1e-12), "loss_per_token": loss_sum / max(tokens, 1e-12)}


def _flat(cfg: dict, prefix: str = "") -> dict:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``; lists as text, None as "none" (every
    tracker accepts str, int, float and bool hyper-parameters)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif v is None:
            out[f"{prefix}{k}"] = "none"
        elif isinstance(v, (bool, int, float, str)):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


class Trackers:
    """The trackers of one run: ``log(row)`` per metrics row, ``close()`` at the end (or ``with``)."""

    def __init__(self, run: Path, names: list[str], config: dict | None = None):
        self.run = Path(run)
        self.names = list(names)
        self.trackers: list = []
        if not self.names:
            return
        check_trackers(self.names)
        from accelerate import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        from .io import read_json, write_json

        PartialState()  # Accelerate's trackers ask it which process is the main one
        ids_path = self.run / "trackers.json"
        ids = read_json(ids_path) if ids_path.is_file() else {}
        name = self.run.name
        for t in self.names:
            cls = LOGGER_TYPE_TO_CLASS[t]
            if t == "tensorboard":
                tracker = cls("tensorboard", str(self.run))
            elif t == "wandb":
                ids.setdefault("wandb", _new_id())
                tracker = cls(PROJECT, name=name, id=ids["wandb"], resume="allow", dir=str(self.run),
                              mode=os.environ.get("WANDB_MODE") or "offline")
            elif t == "mlflow":
                import mlflow

                if not os.environ.get("MLFLOW_TRACKING_URI"):
                    # mlflow 3 refuses its file store unless asked for it; lolkit's default is local files
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                    mlflow.set_tracking_uri((self.run / "mlruns").resolve().as_uri())
                tracker = cls(experiment_name=PROJECT, run_name=name, run_id=ids.get("mlflow"))
            else:  # trackio: local unless the user configured a Space
                tracker = cls(PROJECT, name=name, resume="allow", embed=False)
            tracker.start()
            if t == "mlflow":
                ids["mlflow"] = tracker.active_run.info.run_id
            self.trackers.append(tracker)
        write_json(ids_path, ids)
        if config is not None:
            flat = _flat(config)
            for tracker in self.trackers:
                tracker.store_init_configuration(flat)

    def log(self, row: dict, step: int | None = None) -> None:
        values = _scalars(row)
        step = row.get("step") if step is None else step
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def log_eval_summary(run: Path, names: list[str], summary: dict, step: int | None, prefix: str = "eval") -> None:
    """An eval summary's numbers as ``<prefix>/<key>`` at ``step`` (the run's last), in the run's trackers."""
    if not names:
        return
    import yaml

    # the training config again: a tracker may replace a resumed run's hyper-parameters (trackio does)
    config = yaml.safe_load((Path(run) / "config.yaml").read_text(encoding="utf-8"))
    with Trackers(run, names, config) as trackers:
        trackers.log({f"{prefix}/{k}": v for k, v in summary.items()}, step=step)
