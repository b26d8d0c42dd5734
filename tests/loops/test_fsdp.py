"""The offline loop under FSDP2 with 2 processes (torchrun, gloo on CPU; FSDP asked for as `accelerate launch`
asks, through ACCELERATE_USE_FSDP / FSDP_VERSION): the same losses and final weights as one unsharded process,
a gathered final/ that from_pretrained loads, sharded step checkpoints (per-rank safetensors + a JSON index, no
pickle) from which --resume continues exactly as the uninterrupted run; LoRA adapters save as PEFT folders."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lolkit.run import read_metrics

from ..conftest import run_cli
from .test_infer_distributed import torchrun

# the single-process runs these tests compare with use one thread, as each torchrun worker does
pytestmark = pytest.mark.usefixtures("one_thread")

FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
ARGS = ["train", "--algo", "a_lol", "--max-steps", "3", "--batch-size", "8", "--save-every", "1", "--quiet",
        "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=4"]


def _same_curve(a, b) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        # float32 sums in another order: FSDP reduce-scatters the gradients, so from step 2 on the weights
        # differ in their last bits (~1e-8) and the a_lol loss (~20, ulp 2e-6) by a few ulps: 5e-6 relative
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5, rel=5e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-5)


def _same_weights(a, b, atol: float) -> None:
    wa, wb = load_file(a), load_file(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=atol, rtol=0)


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_unsharded_process_and_resume_exactly(tmp_path, tiny_model):
    one, two = tmp_path / "one", tmp_path / "two"
    res = run_cli(*ARGS, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'c1'}")
    assert res.code == 0, res
    sharded = [*ARGS, "--output-dir", two, "--set", f"algo.cache_dir={tmp_path / 'c2'}"]
    out = torchrun(*sharded, env=FSDP)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_curve(read_metrics(one), read_metrics(two))
    _same_weights(one / "final" / "model.safetensors", two / "final" / "model.safetensors", atol=1e-6)
    # final/ is a plain model folder, loaded by from_pretrained in one process
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two / "final")
    assert type(model).__name__ == json.loads((two / "final" / "config.json").read_text())["architectures"][0] \
        == "LlamaForCausalLM"
    # step checkpoints: one shard per process and the index, no whole weights, no pickle
    step = two / "checkpoints" / "step-3"
    index = json.loads((step / "shards" / "index.json").read_text())
    assert index["world_size"] == 2 and index["files"] == ["rank-0.safetensors", "rank-1.safetensors"]
    assert index["weights"]["model.embed_tokens.weight"] == {"shape": [512, 64], "placements": ["S(0)"]}
    halves = [load_file(step / "shards" / f) for f in index["files"]]
    whole = load_file(two / "final" / "model.safetensors")
    torch.testing.assert_close(torch.cat([h["model/model.embed_tokens.weight"] for h in halves]),
                               whole["model.embed_tokens.weight"], atol=0, rtol=0)  # step 3 is the last step
    assert not list(step.glob("*.safetensors")) and not list(two.rglob("*.bin")) and not list(two.rglob("*.pt"))
    assert not list((two / "checkpoints").glob(".shards-*"))

    resume_exactly(tmp_path, two, sharded, FSDP, "sharded over 2 processes (FSDP) and this run does not shard the model")


def resume_exactly(tmp_path, two, sharded: list, env: dict, refusal: str, last: int = 3) -> None:
    """Kill the 2-process run ``two`` of ``last`` steps before its last (the previous checkpoint kept), then
    resume it: in one process without sharding it is refused (``refusal``), under 2 processes launched as before
    (``env``) it ends as the uninterrupted run did, to the last bit."""
    reference = tmp_path / "reference"
    shutil.copytree(two, reference)
    shutil.rmtree(two / "final")
    shutil.rmtree(two / "checkpoints" / f"step-{last}")
    res = run_cli(*sharded, "--resume")
    assert res.code == 2 and res.err.count("\n") == 1, res
    assert refusal in res.err
    out = torchrun(*sharded, "--resume", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "step_time"} for r in rows]  # noqa: E731
    assert untimed(read_metrics(two)) == untimed(read_metrics(reference))
    _same_weights(reference / "final" / "model.safetensors", two / "final" / "model.safetensors", atol=0)


@pytest.mark.slow
def test_fsdp_lora_saves_peft_adapters(tmp_path, tiny_model):
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*ARGS, "--lora", "--max-steps", "2"]
    res = run_cli(*args, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'c1'}")
    assert res.code == 0, res
    out = torchrun(*args, "--output-dir", two, "--set", f"algo.cache_dir={tmp_path / 'c2'}", env=FSDP)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_curve(read_metrics(one), read_metrics(two))
    assert (two / "final" / "adapter_config.json").is_file() and not (two / "final" / "model.safetensors").exists()
    _same_weights(one / "final" / "adapter_model.safetensors", two / "final" / "adapter_model.safetensors", atol=1e-6)
