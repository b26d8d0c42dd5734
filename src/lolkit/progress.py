"""Rich progress bars for long work (training steps, generation, scoring)."""

from __future__ import annotations

import sys

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


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, disable=disable or not sys.stderr.isatty(), transient=False)


class TrainProgress:
    def __init__(self, total: int, start: int, disable: bool = False):
        self.p = _progress(disable)
        self.task = self.p.add_task("train", total=total, completed=start, info="")

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def update(self, step: int, row: dict) -> None:
        info = f"loss {row['loss']:.4f}  lr {row['lr']:.2e}"
        for k in ("val_reward", "val_nll"):
            if k in row:
                info += f"  {k} {row[k]:.4f}"
        self.p.update(self.task, completed=step, info=info)


class CountProgress:
    """A bar over items (prompts generated, rows scored)."""

    def __init__(self, description: str, total: int, disable: bool = False):
        self.p = _progress(disable)
        self.task = self.p.add_task(description, total=total, info="")

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self.p.advance(self.task, n)
