"""A training run's directory: created only once the inputs are valid, never clobbering what is not a
lolkit run, tidied on resume, and removed again when a fresh run fails before its first step.

Every training loop (offline, online, feedback) goes through these functions:

* :func:`check_run_dir` — before anything is loaded: refuses an existing run without ``--resume`` /
  ``--overwrite``, a resume with different settings, and an ``--overwrite`` of anything that is not
  recognisably a lolkit run directory (``run.json`` / a run's ``config.yaml``), of a symbolic link, or of
  the working directory (or a folder holding it).
* :func:`prepare_run_dir` — once the inputs are valid: replaces (``--overwrite``) or creates the
  directory, writes ``config.yaml``, and on ``--resume`` removes the killed run's temporaries.
* :func:`discard_unstarted` — wraps a loop's entry point: a run this call created that fails (a user
  error, Ctrl-C, anything) before it has produced anything but its set-up files (no logged step, no
  checkpoint, no samples) is removed, so the next try does not meet a half-made run directory.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from .errors import LolkitError
from .io import recover_partial, write_text

_created: list[Path] = []  # run directories created fresh by prepare_run_dir, newest last


def is_lolkit_run(path: Path) -> bool:
    """``run.json`` with an ``algo``, or a ``config.yaml`` with the ``algo`` and ``model`` sections of a
    lolkit config (a run killed during start-up has only that)."""
    try:
        info = json.loads((path / "run.json").read_text(encoding="utf-8"))
        if isinstance(info, dict) and "algo" in info:
            return True
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    try:
        import yaml

        cfg = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("algo"), dict) and isinstance(cfg.get("model"), dict)


def refuse_to_remove(path: Path, what: str = "run directory") -> None:
    """Raise unless ``path`` may be deleted as a whole by ``--overwrite``: a real directory (no symbolic
    link) that does not hold the working directory."""
    if path.is_symlink():
        raise LolkitError(f"{path}: is a symbolic link; --overwrite removes only a real {what}, not a link "
                          "or what it points to: remove the link or choose another --output-dir")
    here, target = Path.cwd().resolve(), path.resolve()
    if here == target or target in here.parents:
        raise LolkitError(f"{path}: holds the working directory; --overwrite will not delete it: "
                          "choose another --output-dir")


def check_run_dir(cfg, resume: bool, overwrite: bool) -> bool:
    """Refuse to touch an existing run without --resume / --overwrite, or anything that is not a lolkit
    run (writes nothing); returns whether the run directory holds anything."""
    from .config import load_yaml, to_dict

    run = Path(cfg.output_dir)
    if (run.exists() or run.is_symlink()) and not run.is_dir():
        raise LolkitError(f"{run}: exists and is not a directory")
    existing = run.is_dir() and any(run.iterdir())
    if existing and not is_lolkit_run(run):
        action = "--resume continues" if resume else "--overwrite removes" if overwrite else "lolkit writes into"
        raise LolkitError(f"{run}: exists and holds no lolkit run (no run.json or config.yaml of one); {action} "
                          "only a lolkit run directory: choose another --output-dir")
    if existing and resume:
        saved = run / "config.yaml"
        if saved.is_file():
            old, new = load_yaml(saved), to_dict(cfg)
            for key in ("max_prompt_len", "max_response_len"):  # unset: resolved from the data, compared once it is
                if new["data"][key] is None:
                    new["data"][key] = (old.get("data") or {}).get(key)
            diff = _first_difference(old, new)
            if diff:
                raise LolkitError(f"{saved}: --resume with a different config ({diff}); "
                                  "use the same settings, or --overwrite to start again")
    elif existing and not overwrite:
        raise LolkitError(f"{run}: run directory exists; pass --resume to continue it or --overwrite to replace it")
    elif existing:
        refuse_to_remove(run)
    return existing


def prepare_run_dir(cfg, resume: bool, overwrite: bool, log=None) -> Path:
    """Create (or, with --overwrite, replace) the run directory; called once the inputs are valid. On
    --resume, the killed run's leftovers (temporaries, a directory caught between two renames) are
    tidied first."""
    from .config import dump_yaml

    run = Path(cfg.output_dir)
    existing = check_run_dir(cfg, resume, overwrite)
    if existing and overwrite and not resume:
        shutil.rmtree(run)
    if existing and resume:
        for folder, change in recover_run(run):
            if log is not None:
                log(f"resume: {change} in {folder}")
    fresh = not run.exists() or not any(run.iterdir())
    run.mkdir(parents=True, exist_ok=True)
    if fresh:
        _created.append(run.absolute())
    write_text(run / "config.yaml", dump_yaml(cfg))
    return run


def recover_run(run: Path) -> list[tuple[Path, str]]:
    """:func:`lolkit.io.recover_partial` in the run directory and every folder below it."""
    done = []
    folders = [run] + sorted(p for p in run.rglob("*") if p.is_dir() and not p.is_symlink()
                             and not any(part.startswith(".") for part in p.relative_to(run).parts))
    for folder in folders:
        done += [(folder, change) for change in recover_partial(folder)]
    return done


SETUP_FILES = ("config.yaml", "run.json", "engine.json", "advantage_stats.json")  # written before the first step


def started(run: Path) -> bool:
    """Whether a run has produced anything worth keeping: any file beyond its set-up files (a logged
    step, a checkpoint, an iteration's samples awaiting human feedback, …) and TensorBoard's logs."""
    for p in run.rglob("*"):
        rel = p.relative_to(run).parts
        if rel[0] in SETUP_FILES or rel[0] == "tensorboard" or any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.stat().st_size > 0:
            return True
    return False


def discard_unstarted(fn):
    """Decorate a loop's entry point: when it raises, remove the run directories this call created
    fresh that have not :func:`started`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mark = len(_created)
        try:
            return fn(*args, **kwargs)
        except BaseException:
            for run in _created[mark:]:
                if run.is_dir() and not run.is_symlink() and not started(run):
                    shutil.rmtree(run, ignore_errors=True)
            raise
        finally:
            del _created[mark:]

    return wrapper


def _first_difference(old, new, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            d = _first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if old == new else f"{prefix.rstrip('.')}: {old!r} -> {new!r}"
