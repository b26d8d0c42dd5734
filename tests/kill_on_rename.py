"""Run the lolkit CLI and SIGKILL it at the last instant of one output's write: when a finished temporary
is renamed onto the name given as the first argument. Used by tests/test_kill_resume.py:

    python tests/kill_on_rename.py final train --output-dir RUN …
"""

import os
import signal
import sys
from pathlib import Path

TARGET = sys.argv[1]
_replace = os.replace


def _replace_or_die(src, dst, *args, **kwargs):
    if Path(dst).name == TARGET and ".tmp-" in Path(src).name:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)


if __name__ == "__main__":
    os.replace = _replace_or_die
    sys.argv = ["lolkit", *sys.argv[2:]]
    from lolkit.cli import main

    main()
