"""Built-in tasks: small, offline, with a programmatic reward, used by the demo and the tests."""

from __future__ import annotations

from . import colours, dates, numbers

TASKS = {"colours": colours, "numbers": numbers, "dates": dates}


def get_task(name: str):
    from ..errors import LolkitError

    if name not in TASKS:
        raise LolkitError(f"unknown built-in task {name!r} (available: {', '.join(TASKS)})")
    return TASKS[name]
