"""The run lifecycle every training loop shares — the offline loop, PPO / NLPO, the feedback loops and
CoLA's stages. A loop keeps only what is its own (batches and losses, rollouts, the data pool, …); what
every run does is written once, here:

* the run directory — checked before anything loads (:func:`check_run_dir`: an existing run needs
  ``--resume`` or ``--overwrite``, a resume the same settings, an overwrite a recognisable lolkit run),
  created once the inputs are valid (:func:`prepare_run_dir`, which writes ``config.yaml`` and tidies a
  killed run's temporaries), and removed again when a fresh run fails before it has :func:`started`;
* ``--resume`` from the newest checkpoint that verifies, with the weights, optimizer, scheduler, RNG
  states and the loop's extra parts (:mod:`lolkit.checkpoint`, one layout for every loop);
* ``metrics.jsonl`` (and any other per-step log of the loop) appended per step and truncated on resume;
* step checkpoints every ``save_every`` steps and at the end (the newest ``keep`` kept), validation every
  ``eval_every`` steps and at the end with the best one in ``checkpoints/best/``, ``final/``;
* the optimizer and learning-rate schedule, the device and Accelerate, ``run.json``, experiment trackers
  and progress.

Usage, in every loop::

    with Run(path, settings, resume=…, overwrite=…) as run:   # checks the directory; writes nothing
        … load the model and the data (a bad input fails here, leaving nothing behind) …
        run.create()                                          # the directory exists from here on
        start = run.restore(weights, optimizer, scheduler, parts)
        run.write_info({...})
        with run.logging(total, report_to):
            for step in range(start + 1, total + 1):
                … the loop's own work → row …
                row.update(run.validate(step, validator, …))
                run.log(row)
                run.checkpoint(step, weights, optimizer, scheduler, parts, state)
        run.finish(weights)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from .errors import LolkitError
from .io import atomic_path, recover_partial, write_json, write_text
from .progress import quiet_deepspeed


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


def check_run_dir(path: str | Path, settings: dict, resume: bool, overwrite: bool) -> bool:
    """Refuse to touch an existing run without --resume / --overwrite, or anything that is not a lolkit
    run (writes nothing); returns whether the run directory holds anything. ``settings`` are what
    ``config.yaml`` holds: a resume must bring the same ones."""
    from .config import load_yaml

    run = Path(path)
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
            old, new = load_yaml(saved), json.loads(json.dumps(settings))
            for key in ("max_prompt_len", "max_response_len"):  # unset: resolved from the data, compared once it is
                if isinstance(new.get("data"), dict) and new["data"].get(key) is None:
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


def prepare_run_dir(path: str | Path, settings: dict, resume: bool, overwrite: bool, log=None) -> tuple[Path, bool]:
    """Create (or, with --overwrite, replace) the run directory and write ``config.yaml``; called once the
    inputs are valid. On --resume, the killed run's leftovers (temporaries, a directory caught between two
    renames) are tidied first. Returns (the directory, whether this call created it fresh)."""
    import yaml

    run = Path(path)
    existing = check_run_dir(run, settings, resume, overwrite)
    if existing and overwrite and not resume:
        shutil.rmtree(run)
    if existing and resume:
        for folder, change in recover_run(run):
            if log is not None:
                log(f"resume: {change} in {folder}")
    fresh = not run.exists() or not any(run.iterdir())
    run.mkdir(parents=True, exist_ok=True)
    write_text(run / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    return run, fresh


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


def _first_difference(old, new, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            d = _first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if old == new else f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


# --------------------------------------------------------------------------------------------------
# the optimizer and the learning-rate schedule
# --------------------------------------------------------------------------------------------------
def make_optimizer(optim, params):
    """AdamW (or bitsandbytes' 8-bit AdamW) over the trainable ``params`` of a module or an iterable,
    with the settings of an :class:`~lolkit.config.OptimConfig`."""
    import torch

    params = [p for p in (params.parameters() if hasattr(params, "parameters") else params) if p.requires_grad]
    kw = {"lr": optim.lr, "betas": (optim.beta1, optim.beta2), "weight_decay": optim.weight_decay}
    if optim.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kw)
    return torch.optim.AdamW(params, **kw)


def make_scheduler(optim, optimizer, total_steps: int):
    """Linear warm-up over ``optim.warmup_steps``, then cosine, linear or constant."""
    import torch

    warm, kind = optim.warmup_steps, optim.scheduler

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------------
def append_jsonl(path: Path, rows: list[dict]) -> None:
    from .io import dumps

    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(dumps(row) + "\n" for row in rows))
        fh.flush()


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop rows past the step a resumed run restarts from (and any torn last line)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    write_text(path, "".join(k + "\n" for k in keep))


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (none when it has none); a torn last line of a killed run is
    skipped (a resume truncates it)."""
    p = Path(run) / "metrics.jsonl"
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines() if p.is_file() else []:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


# --------------------------------------------------------------------------------------------------
# the lifecycle
# --------------------------------------------------------------------------------------------------
class Run:
    """One training run (see the module's docstring). ``settings`` is what ``config.yaml`` holds (a loop's
    resolved config); ``save_every`` / ``eval_every`` count steps (0: only at the end), ``keep`` is how many
    step checkpoints stay. ``divisible``: the loop's global batch sizes by setting name (``{"batch_size": 16}``),
    each of which must split evenly over the processes — checked here, before anything loads.
    ``sharding=True``: the loop's weights may be sharded by FSDP (its model goes through
    ``accelerator.prepare`` and it saves :class:`~lolkit.checkpoint.ModelWeights`); other loops refuse FSDP."""

    def __init__(self, path: str | Path, settings: dict, *, resume: bool = False, overwrite: bool = False,
                 quiet: bool = False, save_every: int = 0, eval_every: int = 0, keep: int = 2,
                 divisible: dict[str, int] | None = None, sharding: bool = False):
        from .distributed import Dist, check_divisible

        self.path, self.settings = Path(path), settings
        self.resume_asked, self.overwrite, self.quiet = resume, overwrite, quiet
        self.save_every, self.eval_every, self.keep = save_every, eval_every, keep
        self.accelerator = make_accelerator(sharding)
        self.zero = zero_stage(self.accelerator)  # DeepSpeed's ZeRO stage (None without DeepSpeed)
        # whole weights must be gathered from the processes (FSDP2, ZeRO-3)
        self.gathers = bool(getattr(self.accelerator, "is_fsdp2", False)) or self.zero == 3
        # step checkpoints hold each process's shard (FSDP2's weights, ZeRO's partitions of the optimizer)
        self.sharded = self.gathers or self.zero is not None
        for name, value in (divisible or {}).items():
            check_divisible(value, self.accelerator.num_processes, name)
        self.dist = Dist.of(self.accelerator)
        self.main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        self.start, self.best, self.state = 0, None, {}
        self.total = 0
        self.created = False
        self.trackers = self.progress = None
        self.extra_logs: tuple[str, ...] = ()
        check_run_dir(self.path, settings, resume, overwrite)
        # every process checks the directory before the main one may create it: a process that starts late
        # would otherwise find the fresh run and refuse it as an existing one
        self.accelerator.wait_for_everyone()

    # -- the directory ----------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        """A run this object created that fails before it has :func:`started` is removed again, so the next
        try meets no half-made run directory."""
        if kind is not None and self.created and self.main:
            run = self.path
            if run.is_dir() and not run.is_symlink() and not started(run):
                shutil.rmtree(run, ignore_errors=True)
        return False

    def say(self, message: str) -> None:
        """One dim line on the console (the main process, unless quiet)."""
        if self.main and not self.quiet:
            from .progress import console

            console.print(f"[dim]{message}[/dim]")

    def create(self, settings: dict | None = None) -> Path:
        """Create (or replace) the directory once the inputs are valid; ``settings`` replaces those given at
        the start when the loop resolved more of them meanwhile (lengths found in the data)."""
        self.settings = settings if settings is not None else self.settings
        if self.main:
            _, self.created = prepare_run_dir(self.path, self.settings, self.resume_asked, self.overwrite, log=self.say)
        self.accelerator.wait_for_everyone()
        return self.path

    def write_info(self, info: dict) -> None:
        """``run.json``: what the run is (written on every start, after the resume point is known)."""
        if self.main:
            write_json(self.path / "run.json", {"processes": self.accelerator.num_processes, **info,
                                                "config": self.settings})

    # -- resume -----------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def restore(self, weights, optimizer, scheduler=None, parts: dict | None = None) -> int:
        """On --resume, load the newest checkpoint that verifies into the live objects; returns the step to
        continue after (0: from the beginning). The loop's own values are in ``self.state``."""
        from . import checkpoint as ckpt

        done = ckpt.usable_checkpoint(ckpt.step_checkpoints(self.checkpoints), self.checkpoints) \
            if self.resume_asked else None
        if done:
            self.state = ckpt.load_checkpoint(done[1], weights, optimizer, scheduler, parts,
                                              self.accelerator.process_index, self.accelerator.num_processes)
            self.start, self.best = self.state["step"], self.state.get("best")
            from .distributed import resume_note

            note = resume_note(self.state.get("processes"), self.accelerator.num_processes)
            if note:
                self.say(note)
        return self.start

    # -- per step ---------------------------------------------------------------------------------------
    def logging(self, total: int, report_to: list[str] = (), extra_logs: tuple[str, ...] = (),
                description: str = "train"):
        """The context of the steps: ``metrics.jsonl`` (and the loop's ``extra_logs``, JSONL files with a
        ``step`` per row) cut back to the resume point, trackers and progress opened."""
        from contextlib import ExitStack

        from .progress import TrainProgress
        from .tracking import Trackers

        self.total, self.extra_logs = total, extra_logs
        if self.main:
            for name in ("metrics.jsonl", *extra_logs):
                truncate_jsonl(self.path / name, self.start)
        stack = ExitStack()
        # trackers first: their start-up (wandb, mlflow, …) must not count in the first step's rate
        self.trackers = stack.enter_context(Trackers(self.path, list(report_to) if self.main else [], self.settings))
        self.progress = stack.enter_context(TrainProgress(total, self.start, disable=self.quiet or not self.main,
                                                          description=description))
        return stack

    def due(self, step: int, every: int) -> bool:
        return bool(every and step % every == 0) or step == self.total

    def log(self, row: dict, **extra: list[dict]) -> None:
        """One step's row to ``metrics.jsonl``, the trackers and the progress line; ``extra``: rows for the
        loop's other logs (``rollouts=[…]`` appends to ``rollouts.jsonl``)."""
        if self.main:
            append_jsonl(self.path / "metrics.jsonl", [row])
            for name, rows in extra.items():
                append_jsonl(self.path / f"{name}.jsonl", rows)
            self.trackers.log(row)
        self.progress.update(row["step"], row)

    def validate(self, step: int, validator, weights, *args) -> dict:
        """Every ``eval_every`` steps and at the last: ``validator.run(*args)`` → its metrics; a better value
        of ``validator.metric`` (``validator.better(new, best)``) than any before keeps ``weights`` in
        ``checkpoints/best/`` (with ``best.json``). A validator that is not ``enabled`` does nothing."""
        if not validator.enabled or not self.due(step, self.eval_every):
            return {}
        values = validator.run(*args)
        if validator.better(values[validator.metric], self.best):
            self.best = values[validator.metric]
            self._gather(weights)
            if self.main:
                with atomic_path(self.checkpoints / "best", is_dir=True, manifest=True) as tmp:
                    weights.save(tmp)
                    write_json(tmp / "best.json", {"step": step, "metric": validator.metric, "value": self.best})
        return values

    def checkpoint(self, step: int, weights, optimizer, scheduler=None, parts: dict | None = None,
                   state: dict | None = None, metric: str | None = None) -> None:
        """Every ``save_every`` steps and at the last: ``checkpoints/step-N`` (then the oldest beyond ``keep``
        go). ``state``: the loop's own JSON values, back in ``self.state`` on resume."""
        from . import checkpoint as ckpt

        if not self.due(step, self.save_every):
            self.accelerator.wait_for_everyone()
            return
        shards = None
        if self.sharded:  # every process writes its shard; the main process moves them into the checkpoint
            shards = self.checkpoints / f".shards-{ckpt.STEP_PREFIX}{step}"
            if self.main:  # a killed run's staging folders
                for old in self.checkpoints.glob(".shards-*"):
                    shutil.rmtree(old, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            ckpt.save_shard(shards, self.accelerator.process_index, weights.model, optimizer)
            self.accelerator.wait_for_everyone()
        if self.main:
            ckpt.save_checkpoint(self.checkpoints / f"{ckpt.STEP_PREFIX}{step}", weights, optimizer, scheduler, step,
                                 {"best": self.best, "best_metric": metric, **(state or {}),
                                  "processes": self.accelerator.num_processes}, parts,
                                 shards=shards, world=self.accelerator.num_processes)
            if shards is not None:
                shutil.rmtree(shards, ignore_errors=True)
            ckpt.prune(self.checkpoints, self.keep)
        self.accelerator.wait_for_everyone()

    def _gather(self, weights) -> None:
        """A sharded model's whole weights, gathered by every process before the main one saves them."""
        if self.gathers:
            weights.gather()

    def accumulation(self):
        """``(backward, no_sync)`` for a step's micro-batches, the last of which runs outside ``no_sync``.
        Under DeepSpeed the engine steps the optimizer in the backward of the accumulation boundary, which
        Accelerate takes from its ``sync_gradients`` flag: ``no_sync`` lowers it for the other micro-batches.
        The loss is not divided by DeepSpeed's accumulation either: lolkit's losses are already normalised by
        the global batch."""
        accelerator = self.accelerator
        if self.zero is None:
            return accelerator.backward, accelerator.no_sync
        from contextlib import contextmanager

        @contextmanager
        def no_sync(model):
            accelerator.gradient_state._set_sync_gradients(False)
            try:
                yield
            finally:
                accelerator.gradient_state._set_sync_gradients(True)

        return (lambda loss: accelerator.backward(loss, scale_wrt_gas=False)), no_sync

    def finish(self, weights, files=None) -> Path:
        """``final/``: the weights (and ``files(folder)``, the loop's own additions), written atomically."""
        self._gather(weights)
        if self.main:
            with atomic_path(self.path / "final", is_dir=True, manifest=True) as tmp:
                weights.save(tmp)
                if files is not None:
                    files(tmp)
        self.accelerator.wait_for_everyone()
        return self.path


def launch_settings() -> dict:
    """What ``accelerate launch`` (or a user, under torchrun) asked for through the environment: FSDP and its
    options, DeepSpeed, its ZeRO stage and its options."""
    import os

    env = os.environ
    flag = lambda name: env.get(name, "false").strip().lower() in ("1", "true", "yes")  # noqa: E731
    return {"fsdp": flag("ACCELERATE_USE_FSDP"), "fsdp_version": env.get("FSDP_VERSION", "1").strip(),
            "offload": flag("FSDP_OFFLOAD_PARAMS"), "ram_efficient": flag("FSDP_CPU_RAM_EFFICIENT_LOADING"),
            "deepspeed": flag("ACCELERATE_USE_DEEPSPEED"),
            # Accelerate's own default when the config names no stage
            "zero_stage": env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2").strip(),
            "zero_offload": {what: env.get(f"ACCELERATE_DEEPSPEED_OFFLOAD_{what.upper()}_DEVICE", "none").strip().lower()
                             for what in ("optimizer", "param")},
            "zero3_init": flag("ACCELERATE_DEEPSPEED_ZERO3_INIT"),
            "ds_config_file": env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none").strip()}


def check_launch(sharding: bool, gpus: bool) -> dict:
    """Refuse, in one line and before anything loads, the launch modes a loop cannot honour: sharding (FSDP,
    DeepSpeed) in a loop that does not gather sharded weights, FSDP1, ZeRO stages other than 2 and 3, CPU
    offload without a GPU, NVMe offload, and loading the weights already sharded (the reference pass runs on
    every process before the model is sharded). Returns the settings (:func:`launch_settings`)."""
    ask = launch_settings()
    if ask["deepspeed"]:
        _check_deepspeed(ask, sharding, gpus)
    if not ask["fsdp"]:
        return ask
    if not sharding:
        raise LolkitError("FSDP is supported by the offline loop (lolkit train with an offline algorithm) only; "
                          "run this loop under DDP (docs/scaling.md)")
    if ask["fsdp_version"] != "2":
        raise LolkitError(f"FSDP version {ask['fsdp_version']}: lolkit shards with FSDP2; set fsdp_version: 2 in the "
                          "Accelerate config (docs/scaling.md)")
    if ask["offload"] and not gpus:
        raise LolkitError("fsdp_offload_params: true moves sharded weights from GPUs to the CPU, and this machine has "
                          "no GPU: set fsdp_offload_params: false")
    if ask["ram_efficient"]:
        raise LolkitError("fsdp_cpu_ram_efficient_loading: true loads the weights on the main process only, and "
                          "lolkit's reference pass runs on every process before the model is sharded: set it to "
                          "false")
    return ask


def _check_deepspeed(ask: dict, sharding: bool, gpus: bool) -> None:
    """The DeepSpeed settings lolkit cannot honour (``ask``: as :func:`launch_settings` gives them, from the
    environment, or as :func:`configure_deepspeed` reads them from a DeepSpeed config file)."""
    import importlib.util

    stage = ask["zero_stage"]
    if not sharding:
        raise LolkitError("DeepSpeed is supported by the offline loop (lolkit train with an offline algorithm) only; "
                          "run this loop under DDP (docs/scaling.md)")
    if importlib.util.find_spec("deepspeed") is None:
        raise LolkitError("the launch asks for DeepSpeed, which is not installed: pip install 'lolkit[deepspeed]'")
    config = ask.get("ds_config_file", "none")
    if config != "none" and not Path(config).is_file():
        raise LolkitError(f"{config}: no such DeepSpeed config file (deepspeed_config_file of the Accelerate config)")
    if stage not in ("2", "3"):
        raise LolkitError(f"DeepSpeed ZeRO stage {stage}: lolkit trains under ZeRO-2 or ZeRO-3; set zero_stage: 2 or 3 "
                          "in the Accelerate config (docs/scaling.md)")
    for what, device in ask["zero_offload"].items():
        if device == "nvme":
            raise LolkitError(f"offload_{what}_device: nvme keeps the {what} state on disk, out of reach of lolkit's "
                              f"checkpoints (safetensors of each process's partition): set it to none or cpu")
        if device == "cpu" and not gpus:
            raise LolkitError(f"offload_{what}_device: cpu moves the {what} state from GPUs to the CPU, and this "
                              f"machine has no GPU: set offload_{what}_device: none")
        if device not in ("none", "cpu"):
            raise LolkitError(f"offload_{what}_device: {device}: expected none or cpu")
    if ask["zero3_init"] and stage == "3":
        raise LolkitError("zero3_init_flag: true partitions the weights as they load, and lolkit's reference pass "
                          "runs on every process before the model is sharded: set it to false")


def make_accelerator(sharding: bool = False):
    """The run's Accelerator, after :func:`check_launch`. Accelerate turns FSDP on for GPU process groups
    only; FSDP2 also runs over gloo on CPU (docs/scaling.md), so a CPU process group that asked for FSDP
    gets it here. DeepSpeed runs on CPU too (its CPU accelerator, gloo): ``cpu=True`` would make Accelerate
    ignore it, so a CPU run asks for a gloo process group instead."""
    import torch
    from accelerate import Accelerator

    gpus = torch.cuda.is_available()
    ask = check_launch(sharding, gpus)
    quiet_deepspeed()
    if ask["deepspeed"]:
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        if not gpus:
            import deepspeed.ops

            # DeepSpeed's CPU backend compiles a shared-memory all-reduce with g++ on first use (about a minute)
            # that only its inference all-reduce calls; training's collectives are torch.distributed's (gloo)
            deepspeed.ops.__compatible_ops__ = {**deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm": False}
        import warnings

        # DeepSpeed 0.19's collectives call torch names that torch 2.13 deprecates, once per call site and process
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated")
        # without the backend, Accelerate sees no process group on CPU (1 process) while DeepSpeed sees N
        accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(zero3_init_flag=False),
                                  kwargs_handlers=[] if gpus else [InitProcessGroupKwargs(backend="gloo")])
        # Accelerate registers its ZeRO-3 config with transformers, whose from_pretrained would then load the
        # weights partitioned; the reference pass needs them whole, and DeepSpeed partitions them in prepare()
        unset_hf_deepspeed_config()
        return accelerator
    accelerator = Accelerator(cpu=not gpus)
    if ask["fsdp"] and accelerator.num_processes > 1 and not getattr(accelerator, "is_fsdp2", False):
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        accelerator.state.distributed_type = DistributedType.FSDP
    return accelerator


def zero_stage(accelerator) -> int | None:
    """The ZeRO stage of a DeepSpeed run (None without DeepSpeed)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def configure_deepspeed(accelerator, batch_size: int, micro_batch_size: int, max_grad_norm: float | None) -> None:
    """Set DeepSpeed's batch sizes and clipping from lolkit's config, before ``prepare``: the global batch is
    ``batch_size``, each process's share is split into micro-batches of ``micro_batch_size`` (their number is
    the accumulation; a share that micro-batches do not divide is one DeepSpeed micro-batch of the whole share,
    accumulation 1: the numbers are bookkeeping for DeepSpeed, lolkit marks the accumulation boundary itself),
    and DeepSpeed's ``gradient_clipping`` is ``optim.max_grad_norm`` (0: none). ``auto`` values are filled; an
    explicit value that disagrees is refused in one line."""
    import torch

    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    # a DeepSpeed config file (deepspeed_config_file) holds what the environment does not: check it the same way
    zero = ds.get("zero_optimization") or {}
    _check_deepspeed({"zero_stage": str(zero.get("stage", 0)), "zero3_init": False,
                      "zero_offload": {what: str((zero.get(f"offload_{what}") or {}).get("device") or "none").lower()
                                       for what in ("optimizer", "param")}}, True, torch.cuda.is_available())
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise LolkitError(f"the DeepSpeed config names its own {section}: lolkit builds it from optim.* "
                              f"(DeepSpeed wraps it); remove the {section} section")
    share = batch_size // accelerator.num_processes
    count = math.ceil(share / micro_batch_size)
    gas = 1 if ds.get("gradient_accumulation_steps") == 1 or share % micro_batch_size else count
    want = {"train_batch_size": (batch_size, "batch_size, the global batch"),
            "gradient_accumulation_steps": (gas, f"the {count} micro-batches of micro_batch_size {micro_batch_size} "
                                                 f"in each process's {share} examples, or 1"),
            "train_micro_batch_size_per_gpu": (share // gas, f"micro_batch_size, or each process's {share} examples"),
            "gradient_clipping": (float(max_grad_norm or 0.0), "optim.max_grad_norm")}
    for key, (value, source) in want.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise LolkitError(f"the DeepSpeed config sets {key}: {ds[key]} and lolkit's config gives {value} ({source}): "
                              f"set it to auto or {value}")
        ds[key] = value
    # Accelerate reads the accumulation from here, else it warns that DeepSpeed's value differs from its own
    accelerator.gradient_accumulation_steps = gas
