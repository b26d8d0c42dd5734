"""Errors a user can cause and fix.

The CLI turns a :class:`LolkitError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class LolkitError(Exception):
    """A problem with the user's input (file, config, model path); printed on one line, exit code 2."""


def data_error(path: str, line: int | None, field: str | None, message: str) -> LolkitError:
    """An error that names the file, the line (1-based) and the field at fault."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if field is not None:
        where += f": field '{field}'"
    return LolkitError(f"{where}: {message}")


def warn(message: str) -> None:
    """One line ``warning: …`` on stderr: something the user should know that does not stop the command
    (printed even with --quiet, which only silences progress and logs)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
