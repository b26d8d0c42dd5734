"""Progress of long work (training steps, generation, scoring).

On a terminal: rich progress bars on stderr. Off a terminal (SLURM, nohup, a pipe: stdout is not a
TTY): one plain line on stdout every few steps — at the first step, then whenever 5 % of the steps or
60 seconds have passed since the last line, and at the end — with the step, the loss (or the count),
the rate and the time left. ``LOLKIT_PROGRESS_EVERY`` sets the cadence: ``50`` (steps), ``30s``
(seconds) or both (``50,30s``). Under several processes only the main one (RANK 0) reports.
"""

from __future__ import annotations

import math
import os
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
EVERY_FRACTION = 0.05  # default cadence of plain lines: 5 % of the steps ...
EVERY_SECONDS = 60.0  # ... or a minute, whichever comes first


def main_process() -> bool:
    """True in the main process of a launch (RANK 0) and in a plain one process run: the one that prints."""
    return os.environ.get("RANK", "0") in ("", "0")


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, disable=disable or not sys.stderr.isatty() or not main_process(),
                    transient=False)


def _cadence(total: int) -> tuple[int | None, float | None]:
    """(steps, seconds) between plain lines, from LOLKIT_PROGRESS_EVERY or the defaults."""
    spec = os.environ.get("LOLKIT_PROGRESS_EVERY", "").strip()
    if not spec:
        return max(1, math.ceil(total * EVERY_FRACTION)), EVERY_SECONDS
    steps = seconds = None
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            if part.endswith("s"):
                seconds = float(part[:-1])
            else:
                steps = max(1, int(part))
        except ValueError:
            from .errors import LolkitError

            raise LolkitError(f"LOLKIT_PROGRESS_EVERY={spec!r}: expected steps (50), seconds (30s) or both (50,30s)") \
                from None
    return steps, seconds


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainLines:
    """One line per ``every`` steps or seconds: ``train 120/400 (30%) loss 0.6931 | 2.5 it/s | ETA 1m52s``."""

    def __init__(self, description: str, total: int, start: int = 0, stream=None, clock=time.monotonic):
        self.description, self.total, self.start = description, total, start
        self.every_steps, self.every_seconds = _cadence(total - start)
        self.stream, self.clock = stream, clock
        self.t0 = self.t_last = clock()
        self.last = start

    def update(self, done: int, info: str = "") -> None:
        now = self.clock()
        due = done >= self.total or done == self.start + 1 \
            or (self.every_steps is not None and done - self.last >= self.every_steps) \
            or (self.every_seconds is not None and now - self.t_last >= self.every_seconds)
        if not due or done == self.last:
            return
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.description} {done}/{self.total}{pct}"] + ([info] if info else [])
        parts += [f"{rate:.3g} it/s" if rate >= 1 else f"{1 / rate:.3g} s/it" if rate > 0 else "– it/s",
                  f"elapsed {_duration(now - self.t0)}",
                  "done" if done >= self.total else f"ETA {_duration(eta)}" if math.isfinite(eta) else "ETA –"]
        print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)
        self.last, self.t_last = done, now


def _plain(description: str, total: int, start: int, disable: bool) -> PlainLines | None:
    if disable or sys.stdout.isatty() or not main_process():
        return None
    return PlainLines(description, total, start)


def train_info(row: dict) -> str:
    """The loss (per token when the loop logs it), learning rate and validation values of a metrics row."""
    info = []
    for k in ("loss", "loss_per_token"):
        if isinstance(row.get(k), (int, float)):
            info.append(f"{k} {row[k]:.4f}")
    if isinstance(row.get("lr"), (int, float)):
        info.append(f"lr {row['lr']:.2e}")
    for k in ("val_reward", "val_nll"):
        if isinstance(row.get(k), (int, float)):
            info.append(f"{k} {row[k]:.4f}")
    return "  ".join(info)


class TrainProgress:
    def __init__(self, total: int, start: int, disable: bool = False, description: str = "train"):
        self.p = _progress(disable)
        self.task = self.p.add_task(description, total=total, completed=start, info="")
        self.plain = _plain(description, total, start, disable)

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def update(self, step: int, row: dict) -> None:
        info = train_info(row)
        self.p.update(self.task, completed=step, info=info)
        if self.plain is not None:
            self.plain.update(step, info)


class CountProgress:
    """A bar over items (prompts generated, rows scored)."""

    def __init__(self, description: str, total: int, disable: bool = False):
        self.p = _progress(disable)
        self.task = self.p.add_task(description, total=total, info="")
        self.plain = _plain(description, total, 0, disable)
        self.done = 0

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self.p.advance(self.task, n)
        self.done += n
        if self.plain is not None:
            self.plain.update(self.done)


def quiet_transformers() -> None:
    """Keep library chatter out of the user's console: transformers' info and progress bars, bitsandbytes'
    note that an optional CPU kernel package is absent (it falls back to its own kernel), and the
    deprecation warning peft triggers through ``is_gradient_checkpointing`` (nothing the user can change)."""
    import logging
    import warnings

    import transformers

    quiet_deepspeed()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def quiet_deepspeed() -> None:
    """Without CUDA, tell DeepSpeed it runs on the CPU: it is imported by Accelerate (``unwrap_model``) and by
    transformers whenever it is installed, and would otherwise warn on stderr that it found no accelerator."""
    import os

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
