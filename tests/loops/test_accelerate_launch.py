"""Launching the way users do: `accelerate launch --config_file examples/accelerate/…` starts 2 CPU processes
here (cpu_ddp.yaml / cpu_fsdp.yaml) and lolkit's files equal one process's; launch modes lolkit cannot honour,
and a batch that does not split among the processes, end in one `error:` line from lolkit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lolkit.run import read_metrics

from ..conftest import run_cli
from .test_fsdp import ARGS, _same_curve
from .test_infer_distributed import EVAL, _prompts, _same_files, torchrun

# the single-process runs these tests compare with use one thread, as each torchrun worker does
pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "accelerate"


def accelerate_launch(config, *args) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config),
           "-m", "lolkit.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_example_configs_are_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in sorted(CONFIGS.glob("*.yaml"))}
    assert kinds == {"cpu_ddp": "MULTI_GPU", "cpu_fsdp": "FSDP", "ddp": "MULTI_GPU", "fsdp": "FSDP",
                     "multinode": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "cpu_zero2": "DEEPSPEED",
                     "cpu_zero3": "DEEPSPEED"}
    for name in ("zero2", "zero3", "cpu_zero2", "cpu_zero3"):
        ds = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["deepspeed_config"]
        # what lolkit needs: it fills the accumulation (Accelerate cannot parse "auto" there) and refuses the rest
        assert "gradient_accumulation_steps" not in ds and ds["zero3_init_flag"] is False, name
        assert ds["offload_optimizer_device"] != "nvme" and ds["offload_param_device"] != "nvme", name
    for name in ("fsdp", "cpu_fsdp"):
        fsdp = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["fsdp_config"]
        # what lolkit needs (check_launch refuses the rest)
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_cpu_ram_efficient_loading"] is False
    assert yaml.safe_load((CONFIGS / "cpu_ddp.yaml").read_text())["num_processes"] == 2


@pytest.mark.slow
def test_accelerate_launch_train_under_fsdp_and_eval_under_ddp_on_two_cpu_processes(tmp_path, tiny_model):
    args = [*ARGS, "--max-steps", "2", "--save-every", "0"]
    one, two = tmp_path / "one", tmp_path / "two"
    res = run_cli(*args, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'c1'}")
    assert res.code == 0, res
    out = accelerate_launch(CONFIGS / "cpu_fsdp.yaml", *args, "--output-dir", two,
                            "--set", f"algo.cache_dir={tmp_path / 'c2'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"processes": 2' in (two / "run.json").read_text()
    _same_curve(read_metrics(one), read_metrics(two))

    data = _prompts(tmp_path, 6)
    res = run_cli("eval", "--model", one, "--data", data, "--output-dir", tmp_path / "e1", *EVAL)
    assert res.code == 0, res
    out = accelerate_launch(CONFIGS / "cpu_ddp.yaml", "eval", "--model", one, "--data", data,
                            "--output-dir", tmp_path / "e2", *EVAL)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_files(tmp_path / "e1", tmp_path / "e2", ["generations.jsonl", "summary.json"])


@pytest.mark.slow
def test_launch_errors_are_one_line_from_lolkit(tmp_path, tiny_model):
    # a global batch that does not split among the processes: refused before the model loads, by every
    # process (each exits with 2, which torchrun reports), in one line printed by the main one
    run = tmp_path / "run"
    out = torchrun("train", "--algo", "a_lol", "--max-steps", "1", "--batch-size", "3", "--quiet", "--output-dir", run)
    assert out.returncode != 0
    assert _error_lines(out.stderr) == ["error: batch_size 3 is not divisible by the 2 processes: it is the global "
                                       "batch, split evenly among them"], out.stderr[-3000:]
    # the first worker to leave exits with 2; torchrun may stop the other before it does (then SIGTERM)
    assert "exitcode  : 2" in out.stderr and "lolkit/" not in out.stderr  # no traceback of lolkit's
    assert not run.exists()

    # FSDP with CPU offload on a machine without a GPU
    offload = yaml.safe_load((CONFIGS / "cpu_fsdp.yaml").read_text())
    offload["fsdp_config"]["fsdp_offload_params"] = True
    config = tmp_path / "offload.yaml"
    config.write_text(yaml.safe_dump(offload))
    out = accelerate_launch(config, "train", "--algo", "a_lol", "--max-steps", "1", "--batch-size", "4", "--quiet",
                            "--output-dir", run)
    assert out.returncode != 0
    assert _error_lines(out.stderr) == ["error: fsdp_offload_params: true moves sharded weights from GPUs to the CPU, "
                                        "and this machine has no GPU: set fsdp_offload_params: false"], out.stderr[-3000:]
    assert not run.exists()

    # a missing config file: Accelerate stops before lolkit starts (its own error, which lolkit cannot shape)
    out = accelerate_launch(tmp_path / "no_such.yaml", "train", "--output-dir", run)
    assert out.returncode == 1 and f"The passed configuration file `{tmp_path / 'no_such.yaml'}` does not exist" \
        in out.stderr
    assert not run.exists()
