"""Test-only reward callables (importable as ``tests.reward_helpers:NAME`` from the repository root)."""

from __future__ import annotations

import os
import time


def slow_length(prompts, responses, references, metas, scale: float = 10.0):
    """len(response) / scale; sleeps $LOLKIT_TEST_SCORE_DELAY seconds per call and appends the batch size
    to $LOLKIT_TEST_SCORE_LOG, so a test can kill a run mid-way and count what a re-run scores."""
    log = os.environ.get("LOLKIT_TEST_SCORE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{len(responses)}\n")
    time.sleep(float(os.environ.get("LOLKIT_TEST_SCORE_DELAY", "0")))
    return [len(r) / scale for r in responses]


def echo_meta(prompts, responses, references, metas):
    """meta['x'] of each record (checks that metas reach callables)."""
    return [float(m.get("x", 0)) for m in metas]
