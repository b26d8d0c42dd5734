"""The offline loop under DeepSpeed ZeRO-2 and ZeRO-3 with 2 processes on CPU (gloo, DeepSpeed's CPU accelerator;
DeepSpeed asked for as `accelerate launch` asks, through ACCELERATE_USE_DEEPSPEED / ACCELERATE_DEEPSPEED_ZERO_STAGE,
or launched by `accelerate launch --config_file examples/accelerate/cpu_zero2.yaml`): the same losses, gradient
norms and final weights as one unsharded process with 2 micro-batches per process (the accumulation boundary and
the clipping are DeepSpeed's), a gathered final/ that from_pretrained loads, step checkpoints holding each
process's ZeRO partition (safetensors + a JSON index, no pickle) from which --resume continues exactly as the
uninterrupted run; LoRA adapters save as PEFT folders; launch modes lolkit cannot honour end in one line."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lolkit.run import read_metrics

from ..conftest import run_cli
from .test_accelerate_launch import CONFIGS, _error_lines, accelerate_launch
from .test_fsdp import ARGS, _same_curve, _same_weights, resume_exactly
from .test_infer_distributed import torchrun

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
              # the single-process runs these tests compare with use one thread, as each worker does
              pytest.mark.usefixtures("one_thread")]

ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
# 4 examples per process in micro-batches of 2: DeepSpeed's step must come at the second backward only
DS_ARGS = [*ARGS, "--set", "micro_batch_size=2"]


def _one_process(tmp_path, *args):
    one = tmp_path / "one"
    res = run_cli(*DS_ARGS, *args, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'c1'}")
    assert res.code == 0, res
    return one


@pytest.mark.slow
def test_zero3_two_processes_equal_one_unsharded_process_and_resume_exactly(tmp_path, tiny_model):
    one, two = _one_process(tmp_path), tmp_path / "two"
    sharded = [*DS_ARGS, "--output-dir", two, "--set", f"algo.cache_dir={tmp_path / 'c2'}"]
    out = torchrun(*sharded, env=ZERO3)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_curve(read_metrics(one), read_metrics(two))
    _same_weights(one / "final" / "model.safetensors", two / "final" / "model.safetensors", atol=1e-6)
    info = json.loads((two / "run.json").read_text())  # ZeRO-3's parameters hold no elements outside a forward
    assert info["processes"] == 2 and info["parameters"] == json.loads((one / "run.json").read_text())["parameters"]
    # final/ is a plain model folder gathered from the partitions, loaded by from_pretrained in one process
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two / "final")
    assert type(model).__name__ == "LlamaForCausalLM"
    whole = load_file(two / "final" / "model.safetensors")
    torch.testing.assert_close(model.model.embed_tokens.weight, whole["model.embed_tokens.weight"], atol=0, rtol=0)
    # step checkpoints: one partition per process and the index, no whole weights, no pickle
    step = two / "checkpoints" / "step-3"
    index = json.loads((step / "shards" / "index.json").read_text())
    assert index["world_size"] == 2 and index["files"] == ["rank-0.safetensors", "rank-1.safetensors"]
    assert index["deepspeed"]["zero_stage"] == 3
    assert index["weights"]["model.embed_tokens.weight"] == {"shape": [512, 64], "placements": None}
    halves = [load_file(step / "shards" / f) for f in index["files"]]
    # each process's flat fp32 partitions hold half of every weight: together, every trainable element once
    n = sum(v.numel() for v in whole.values() if v.dim())  # the tiny model ties no weights
    assert n <= sum(t.numel() for h in halves for k, t in h.items() if k.startswith("partition/")) < n + 1024
    assert {k.split("/")[0] for h in halves for k in h} == {"partition", "optimizer"}
    assert not list(step.glob("*.safetensors")) and not list(two.rglob("*.bin")) and not list(two.rglob("*.pt"))
    assert not list((two / "checkpoints").glob(".shards-*"))

    resume_exactly(tmp_path, two, sharded, ZERO3,
                   "partitioned over 2 processes (DeepSpeed ZeRO-3) and this run does not shard the model")


@pytest.mark.slow
def test_accelerate_launch_zero2_equals_one_unsharded_process_and_resumes_exactly(tmp_path, tiny_model):
    one, two = _one_process(tmp_path, "--max-steps", "2"), tmp_path / "two"
    out = accelerate_launch(CONFIGS / "cpu_zero2.yaml", *DS_ARGS, "--max-steps", "2", "--output-dir", two,
                            "--set", f"algo.cache_dir={tmp_path / 'c2'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((two / "run.json").read_text())["processes"] == 2
    _same_curve(read_metrics(one), read_metrics(two))
    # ZeRO-2 keeps whole weights on every process: final/ is the main process's, as under DDP
    _same_weights(one / "final" / "model.safetensors", two / "final" / "model.safetensors", atol=1e-6)
    index = json.loads((two / "checkpoints" / "step-2" / "shards" / "index.json").read_text())
    assert index["world_size"] == 2 and index["deepspeed"]["zero_stage"] == 2
    # resumed from step 1 (torchrun, DeepSpeed asked for as accelerate launch asks): the weights come back from
    # the partitions (all-gathered), the optimizer from each process's state
    zero2 = {**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}
    resume_exactly(tmp_path, two, [*DS_ARGS, "--max-steps", "2", "--output-dir", two, "--set",
                                   f"algo.cache_dir={tmp_path / 'c2'}"], zero2,
                   "partitioned over 2 processes (DeepSpeed ZeRO-2) and this run does not shard the model", last=2)


@pytest.mark.slow
def test_zero3_lora_saves_peft_adapters(tmp_path, tiny_model):
    args = ["--lora", "--max-steps", "2"]
    one, two = _one_process(tmp_path, *args), tmp_path / "two"
    out = torchrun(*DS_ARGS, *args, "--output-dir", two, "--set", f"algo.cache_dir={tmp_path / 'c2'}", env=ZERO3)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_curve(read_metrics(one), read_metrics(two))
    assert (two / "final" / "adapter_config.json").is_file() and not (two / "final" / "model.safetensors").exists()
    _same_weights(one / "final" / "adapter_model.safetensors", two / "final" / "adapter_model.safetensors", atol=1e-6)


def _lolkit(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lolkit.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)


@pytest.mark.slow
def test_deepspeed_launches_lolkit_cannot_honour_are_one_line(tmp_path, tiny_model):
    run = tmp_path / "run"
    train = ["train", "--algo", "a_lol", "--max-steps", "1", "--batch-size", "4", "--quiet", "--output-dir", run]
    for env, message in [
        ({}, "DeepSpeed is supported by the offline loop (lolkit train with an offline algorithm) only"),
        ({"ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}, "offload_optimizer_device: cpu moves the optimizer "
                                                                   "state from GPUs to the CPU, and this machine has no "
                                                                   "GPU: set offload_optimizer_device: none"),
        ({"ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"}, "zero3_init_flag: true partitions the weights as they load")]:
        args = ["train", "--algo", "ppo", "--max-steps", "1", "--quiet", "--output-dir", run] if not env else train
        out = _lolkit(*args, env={**ZERO3, **env})
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
        assert out.stderr.startswith(f"error: {message}"), out.stderr
        assert not run.exists()
    # an explicit DeepSpeed value that disagrees with lolkit's config (clipping 0.5, optim.max_grad_norm 1.0): the
    # Accelerator is up (one process under torchrun), nothing loaded, no run directory
    out = torchrun(*train, processes=1, env={**ZERO3, "ACCELERATE_GRADIENT_CLIPPING": "0.5"})
    assert out.returncode != 0
    assert _error_lines(out.stderr) == ["error: the DeepSpeed config sets gradient_clipping: 0.5 and lolkit's config "
                                        "gives 1.0 (optim.max_grad_norm): set it to auto or 1.0"], out.stderr[-3000:]
    assert not run.exists()


def _configured(ds: dict, batch_size: int = 8, micro: int = 2, clip: float | None = 1.0, world: int = 2) -> dict:
    from types import SimpleNamespace

    from lolkit.run import configure_deepspeed

    accelerator = SimpleNamespace(num_processes=world, gradient_accumulation_steps=1,
                                  state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)))
    configure_deepspeed(accelerator, batch_size, micro, clip)
    assert accelerator.gradient_accumulation_steps == ds["gradient_accumulation_steps"]
    return {k: ds[k] for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                               "gradient_clipping")}


def test_deepspeed_batch_settings_come_from_lolkit_and_a_disagreeing_config_is_refused():
    from lolkit.errors import LolkitError

    zero = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}}}
    auto = {**zero, "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    # 8 examples over 2 processes: 4 each, in 2 micro-batches of 2
    assert _configured(dict(auto)) == {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
                                       "gradient_accumulation_steps": 2, "gradient_clipping": 1.0}
    # an explicit accumulation of 1 (lolkit still splits the share): DeepSpeed's micro-batch is the whole share
    assert _configured({**auto, "gradient_accumulation_steps": 1}) == {
        "train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0}
    # micro-batches of 3 do not divide a share of 4 (3 + 1), no clipping; keys left out are filled too
    assert _configured(dict(zero), micro=3, clip=None) == {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
                                                           "gradient_accumulation_steps": 1, "gradient_clipping": 0.0}
    for ds, message in [
        ({**auto, "train_batch_size": 16}, "the DeepSpeed config sets train_batch_size: 16 and lolkit's config gives 8"),
        ({**auto, "gradient_accumulation_steps": 4}, "sets gradient_accumulation_steps: 4 and lolkit's config gives 2"),
        ({**auto, "gradient_clipping": 0.5}, "sets gradient_clipping: 0.5 and lolkit's config gives 1.0"),
        ({**auto, "optimizer": {"type": "AdamW"}}, "the DeepSpeed config names its own optimizer"),
        ({**auto, "zero_optimization": {"stage": 1}}, "DeepSpeed ZeRO stage 1"),
        ({**auto, "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}},
         "offload_param_device: nvme")]:
        with pytest.raises(LolkitError, match=message):
            _configured(ds)
