"""Shared fixtures: an isolated model cache, the tiny model, and an in-process CLI runner."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in one worker per core (pytest-xdist): each worker and the processes its tests
    # start keep to one thread, or torch's threads of two workers would spin against each other on the cores
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def lolkit_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("lolkit-cache")
    old = os.environ.get("LOLKIT_CACHE")
    os.environ["LOLKIT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LOLKIT_CACHE", None)
    else:
        os.environ["LOLKIT_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(lolkit_cache) -> str:
    from lolkit.models import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_gpt2(lolkit_cache) -> str:
    """A tiny random GPT-2 with dropout 0.1 on embeddings, residuals and attention (the tiny Llama has none)."""
    from lolkit.tiny import create_tiny_model

    return str(create_tiny_model(lolkit_cache / "tiny-gpt2", arch="gpt2", hidden_size=64, layers=2, heads=4))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from lolkit.models import load_tokenizer

    return load_tokenizer(tiny_model)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err[-500:]!r})"


@pytest.fixture
def one_thread():
    """torch on one thread in this process for the test, as every torchrun worker runs (OMP_NUM_THREADS=1): an
    in-process run compared with a multi-process one then sums its matrix products in the same order (with two
    threads, a few steps at lr 1e-3 drift past the 1e-5 the comparisons allow)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str) -> CliResult:
    """Run ``lolkit ARGS`` in this process and capture exit code, stdout and stderr."""
    from lolkit import cli

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["lolkit", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
