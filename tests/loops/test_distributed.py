"""Two processes under torchrun (gloo on CPU) follow the single-process loss curve."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lolkit.run import read_metrics

from ..conftest import run_cli

ARGS = ["train", "--algo", "a_lol", "--max-steps", "3", "--batch-size", "8", "--save-every", "0", "--quiet",
        "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=4"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path, tiny_model):
    one = tmp_path / "one"
    res = run_cli(*ARGS, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'cache1'}")
    assert res.code == 0, res
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "lolkit.cli", *ARGS,
                          "--output-dir", str(two), "--set", f"algo.cache_dir={tmp_path / 'cache2'}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (two / "run.json").exists() and '"processes": 2' in (two / "run.json").read_text()
    a, b = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        # within 1e-5, or 1e-6 relative for larger losses (float32 sums in another order: the a_lol loss
        # of a random tiny model is ~30, where one ulp is 2e-6)
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5, rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
    # the sharded reference pass assembled the same scores as the single-process one
    ref1 = load_file(next((tmp_path / "cache1").glob("ref-*")) / "reference.safetensors")
    ref2 = load_file(next((tmp_path / "cache2").glob("ref-*")) / "reference.safetensors")
    torch.testing.assert_close(ref1["seq_logps"], ref2["seq_logps"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref1["token_logps"], ref2["token_logps"], atol=1e-5, rtol=1e-5)
    assert torch.equal(ref1["offsets"], ref2["offsets"])
