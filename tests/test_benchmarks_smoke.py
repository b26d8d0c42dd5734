"""The benchmarks' core at toy sizes (seconds), and the chunked LM-head log-prob path they measure."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def test_padding_benchmark_core():
    from benchmarks.padding import measure

    r = measure(2000, 16, 8)
    assert r["grouped"] < 0.05 < r["random"] and r["token_ratio"] > 1.5


@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_head_logprobs_chunked_matches_full_log_softmax(chunk_rows):
    from lolkit.logprobs import head_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(11, 16, requires_grad=True)
    targets = torch.randint(0, 50, (11,))
    weights = torch.randn(11)
    full = torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None]).squeeze(-1)
    grads = torch.autograd.grad((full * weights).sum(), [hidden, head.weight, head.bias])
    ours = head_logprobs(hidden, head, targets, chunk_rows=chunk_rows)
    mine = torch.autograd.grad((ours * weights).sum(), [hidden, head.weight, head.bias])
    torch.testing.assert_close(ours, full)
    for a, b in zip(mine, grads, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(head_logprobs(hidden, head, targets, chunk_rows=chunk_rows), full)


def test_forward_logprobs_never_builds_full_logits(tiny_model):
    from lolkit.data.tokenize import Encoded, collate
    from lolkit.logprobs import forward_logprobs, response_logprobs
    from lolkit.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(name=tiny_model), trainable=True)
    items = [Encoded((5, 6, 7), (8, 9, 10, 11), False), Encoded((5,), (12, 13), False)]
    b = collate(items, [0, 1], tok.pad_token_id)
    seq, tokens, out = forward_logprobs(model, b)
    assert out.logits.shape[0] == 0  # the LM head ran on the response rows only, outside the model
    full = response_logprobs(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids,
                             b.response_mask)
    torch.testing.assert_close(tokens, full)
    torch.testing.assert_close(seq, full.sum(-1))


@pytest.mark.slow
def test_rm_vs_trl_benchmark_runs_quick():
    """benchmarks/rm_vs_trl.py --quick: both trainers run on the same pairs and the ratio is printed (its
    value is the benchmark's business, not a test's: timings on a shared machine vary)."""
    import os
    import re
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "rm_vs_trl.py"
    res = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    rates = re.search(r"throughput: lolkit ([\d.]+) pairs/s \| TRL ([\d.]+) pairs/s", res.stdout)
    assert rates and float(rates.group(1)) > 0 and float(rates.group(2)) > 0, res.stdout
    assert re.search(r"speed-up lolkit vs TRL = [\d.]+x", res.stdout), res.stdout
    losses = re.search(r"mean loss of the last epoch: lolkit ([\d.]+) \| TRL ([\d.]+)", res.stdout)
    assert losses and all(0 < float(x) < 5 for x in losses.groups()), res.stdout


@pytest.mark.slow
def test_data_loading_benchmark_quick(tmp_path):
    """benchmarks/data_loading.py --quick end to end (its three pipelines in their own processes, on 2,000
    records from Parquet): every pipeline reads every record, and the second lolkit run is a cache hit."""
    import os
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "data_loading.py"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(script), "--quick", "--records", "2000"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("2,000 preference records (parquet")
    table = {x.split()[0]: float(x.split()[1]) for x in lines[2:5]}
    assert set(table) == {"plain", "lolkit", "cached"} and table["cached"] < table["lolkit"]
    assert any(x.startswith("cached  second / first") and x.endswith("PASS") for x in lines)
    assert not any(tmp_path.glob("lolkit-data-bench-*"))  # the scratch folder is removed on exit


@pytest.mark.slow
def test_ppo_memory_benchmark_quick():
    """benchmarks/ppo_memory.py --quick: both PPO / NLPO minibatch passes run in their own processes, their
    log-probs, entropy and values agree to 1e-6 (the memory ratio is judged at the full sizes only)."""
    import os
    import re
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "ppo_memory.py"
    res = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    for mode in ("ppo", "nlpo"):
        line = re.search(rf"  {mode}: before / lolkit peak memory = ([\d.]+)x .* values = ([\d.e+-]+) .* PASS", res.stdout)
        assert line and float(line.group(1)) > 0 and float(line.group(2)) <= 1e-6, res.stdout
    assert res.stdout.rstrip().endswith("overall PASS"), res.stdout


@pytest.mark.slow
def test_loop_speed_benchmark_quick_against_this_tree():
    """benchmarks/loop_speed.py --quick with this tree as its own baseline: both trees' processes run the
    loops asked for and the table has a ratio per loop."""
    import os
    import re
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, str(repo / "benchmarks" / "loop_speed.py"), "--quick", "--baseline",
                          str(repo), "--loops", "nll,cola_world"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    for loop in ("nll", "cola_world"):
        assert re.search(rf"^{loop} +[\d.]+ +[\d.]+ +[\d.]+x", res.stdout, re.MULTILINE), res.stdout
    assert "overall PASS" in res.stdout


@pytest.mark.slow
def test_seq2seq_benchmark_runs(tmp_path):
    """benchmarks/seq2seq.py with one round: both generation passes and both training steps are timed
    and reported (the ratios are the benchmark's business: timings on a shared machine vary)."""
    import os
    import re
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "seq2seq.py"
    res = subprocess.run([sys.executable, str(script), "--rounds", "1", "--algo", "a_lol"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"eval generate \(greedy\)\s+\d+\s+\d+\s+[\d.]+", res.stdout), res.stdout
    assert re.search(r"rollout sample_tokens\s+\d+\s+\d+\s+[\d.]+", res.stdout), res.stdout
    assert re.search(r"a_lol\s+8\s+\d+ x \d+\s+[\d.]+\s+[\d.]+\s+[\d.]+", res.stdout), res.stdout
    assert not any(tmp_path.glob("lolkit-s2s-bench-*"))


@pytest.mark.slow
def test_online_step_overhead_benchmark_quick(tmp_path):
    """benchmarks/step_overhead.py --online with one round: the ppo, a2c and trpo updates are each timed
    against a bare forward + backward of the same rollout batch and their ratios printed in one run (the
    values are the benchmark's business; a trust-region step costs tens of passes)."""
    import os
    import re
    import subprocess

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "step_overhead.py"
    res = subprocess.run([sys.executable, str(script), "--online", "--rounds", "1"], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr[-2000:]
    ratios = dict(re.findall(r"online (\w+)\s+8 rollouts, \d+ response tokens: .* ratio ([\d.]+)", res.stdout))
    assert set(ratios) == {"ppo", "a2c", "trpo"} and all(float(r) > 0 for r in ratios.values()), res.stdout
    assert float(ratios["trpo"]) > float(ratios["a2c"]), res.stdout  # CG's Fisher–vector products are passes too
    assert not any(tmp_path.glob("lolkit-bench-*"))
