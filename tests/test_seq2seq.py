"""Encoder–decoder (T5, BART) policies: the tiny T5, the seq2seq log-prob path against the model's own
computation (and a float64 copy of it), the batch layout, lengths, generation, and the offline
algorithms, the reference cache and --resume from the CLI."""

import math

import pytest
import torch

from lolkit.data.tokenize import Encoded, SeparateContext, collate, context_window, pair_lengths, prompt_limit
from lolkit.io import read_json
from lolkit.logprobs import forward_logprobs, seq2seq_inputs
from lolkit.run import read_metrics

from .conftest import read_jsonl, run_cli, write_jsonl

FAST = ["--batch-size", "8", "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=8", "--quiet"]


@pytest.fixture(scope="session")
def tiny_t5(lolkit_cache) -> str:
    """Built by the CLI, as a user would: ``lolkit tiny-model DIR --arch t5``."""
    path = lolkit_cache / "tiny-t5"
    res = run_cli("tiny-model", str(path), "--arch", "t5")
    assert res.code == 0, res
    return str(path)


def _t5(tiny_t5, **kw):
    from lolkit.models import ModelConfig, load_model

    return load_model(ModelConfig(name=tiny_t5), seq2seq=True, **kw)


def _bart(seed: int = 0):
    """A tiny random BART whose final_logits_bias is not zero (the bias it adds after its LM head)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    conf = BartConfig(vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                      pad_token_id=1, eos_token_id=2, bos_token_id=0, decoder_start_token_id=2, dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0)
    model = BartForConditionalGeneration(conf).eval()
    model.final_logits_bias.normal_(0, 1.0)
    return model


def _t5_v11(seed: int = 0):
    """A T5 v1.1-style model (gated FFN, decoder state not scaled before the head)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    conf = T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, dropout_rate=0.0,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)
    return T5ForConditionalGeneration(conf).eval()


def _examples(vocab: int, eos: int, seed: int = 0) -> list[Encoded]:
    """Prompts and responses of different lengths (the response ends with EOS; one is cut and has none)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p, r, cut in [(5, 3, False), (2, 6, False), (7, 1, False), (3, 4, True)]:
        prompt = tuple(int(x) for x in torch.randint(3, vocab, (p,), generator=g))
        resp = tuple(int(x) for x in torch.randint(3, vocab, (r,), generator=g))
        out.append(Encoded(prompt, resp if cut else resp + (eos,), cut))
    return out


def _direct(model, examples: list[Encoded], dtype=torch.float32) -> list[torch.Tensor]:
    """Per-token log-probs of each response from ``model(input_ids, labels=…)`` one example at a time
    (no padding anywhere), log-softmax in ``dtype``."""
    rows = []
    for e in examples:
        out = model(input_ids=torch.tensor([e.prompt_ids]), labels=torch.tensor([e.response_ids]))
        logp = torch.log_softmax(out.logits.to(dtype), -1)[0]
        rows.append(logp.gather(-1, torch.tensor(e.response_ids)[:, None]).squeeze(-1))
    return rows


# --- the tiny T5 and the batch layout -----------------------------------------------------------------

def test_tiny_t5_starts_its_decoder_from_pad_and_reloads(tiny_t5):
    model, tok, _ = _t5(tiny_t5, trainable=False)
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert model.generation_config.decoder_start_token_id == tok.pad_token_id == model.config.pad_token_id
    assert read_json(f"{tiny_t5}/config.json")["decoder_start_token_id"] == tok.pad_token_id
    assert context_window(model) is None  # relative positions: no context to cut to
    assert sum(p.numel() for p in model.parameters()) < 400_000


def test_seq2seq_inputs_layout_is_prompt_in_encoder_response_in_decoder():
    # prompts [11 12 13] and [21]; responses [31 32 EOS=2] and [41 EOS]; pad 0, decoder start 9
    b = collate([Encoded((11, 12, 13), (31, 32, 2), False), Encoded((21,), (41, 2), False)], [0, 1], 0)
    got = seq2seq_inputs(b, pad_id=0, start_id=9)
    assert got["input_ids"].tolist() == [[11, 12, 13], [21, 0, 0]]
    assert got["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert got["labels"].tolist() == [[31, 32, 2], [41, 2, 0]]
    assert got["decoder_input_ids"].tolist() == [[9, 31, 32], [9, 41, 2]]
    assert got["decoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


# --- log-probs: parity with the model's own computation ---------------------------------------------

@pytest.mark.parametrize("kind", ["tiny_t5", "t5_v11", "bart", "fallback"])
def test_seq2seq_logprobs_equal_the_models_own_and_a_float64_copy(kind, tiny_t5, monkeypatch):
    if kind == "tiny_t5":
        model = _t5(tiny_t5, trainable=False)[0]
    elif kind == "bart":
        model = _bart()
    else:
        model = _t5_v11()
    if kind == "fallback":  # a family the chunked head does not know: the model's own decoder logits
        monkeypatch.setattr("lolkit.logprobs.SEQ2SEQ_HEADS", ())
    eos = model.config.eos_token_id
    examples = _examples(model.config.vocab_size, eos)
    batch = collate(examples, range(len(examples)), model.config.pad_token_id)
    with torch.no_grad():
        seq, tokens, out = forward_logprobs(model, batch)
        direct = _direct(model, examples)
        gold = _direct(model.double(), examples, torch.float64)
    assert out.logits.shape[1] == (0 if kind != "fallback" else max(len(e.response_ids) for e in examples))
    mask = batch.response_mask.bool()
    for b, e in enumerate(examples):
        row = tokens[b][mask[b]]
        assert row.shape[0] == len(e.response_ids)
        torch.testing.assert_close(row, direct[b], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(row.double(), gold[b], atol=5e-5, rtol=1e-5)
        assert seq[b].item() == pytest.approx(direct[b].sum().item(), abs=1e-4)
    assert (tokens[~mask] == 0).all()


def test_seq2seq_gradients_equal_the_models_own_through_the_chunked_head(tiny_t5, monkeypatch):
    """Training path: the LM head in chunks of 3 rows (recomputed in backward) gives the gradients of a
    plain backward through ``model(input_ids, labels=…)``."""
    monkeypatch.setattr("lolkit.logprobs.CHUNK_ELEMENTS", 3 * 512)
    model = _t5(tiny_t5, trainable=True)[0]
    examples = _examples(model.config.vocab_size, model.config.eos_token_id, seed=1)
    batch = collate(examples, range(len(examples)), model.config.pad_token_id)
    seq, _, _ = forward_logprobs(model, batch)
    (seq * torch.tensor([1.0, -0.5, 2.0, 0.25])).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    direct = _direct(model, examples)
    sum(w * d.sum() for w, d in zip([1.0, -0.5, 2.0, 0.25], direct, strict=True)).backward()
    assert ours.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_causal_log_probs_unchanged_by_the_seq2seq_branch(tiny_model):
    """The causal path gives what it gave before: the plain full-logits computation, to float32 rounding."""
    from lolkit.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(name=tiny_model), trainable=False)
    examples = _examples(len(tok), tok.eos_token_id)
    batch = collate(examples, range(len(examples)), tok.pad_token_id)
    with torch.no_grad():
        _, tokens, _ = forward_logprobs(model, batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    full = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(tokens, full * batch.response_mask, atol=1e-6, rtol=1e-6)


# --- lengths: encoder and decoder each have their own context ----------------------------------------

def test_lengths_of_an_encoder_decoder_fit_each_side_on_its_own():
    model = _bart()
    window = context_window(model)
    assert isinstance(window, SeparateContext) and window == 64 and f"({window})" == "(64)"
    # 60 + 50 tokens do not fit a shared context of 64, but each side fits its own
    assert pair_lengths(None, None, 60, 50, window) == pair_lengths(None, None, 60, 50, None)
    lim = pair_lengths(None, None, 80, 50, window)
    assert (lim.max_prompt_len, lim.max_response_len) == (64, 50) and "encoder and the decoder" in lim.clamped
    causal = pair_lengths(None, None, 60, 50, 64)
    assert causal.max_prompt_len + causal.max_response_len <= 64
    # generating 32 new tokens takes nothing from the encoder's room
    assert prompt_limit(None, window, 32).max_prompt_len == 64
    assert prompt_limit(None, 64, 32).max_prompt_len == 32
    assert "exceeds the context" in prompt_limit(100, window, 32).clamped


def test_prompt_cuts_are_counted_for_an_encoder_decoder(tmp_path):
    from lolkit.data.tokenize import encode_prompts

    model = _bart()

    class Tok:  # one token per character
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [3 + (ord(c) % 90) for c in text]}

    texts = ["a" * 10, "b" * 70, "c" * 64]
    cut = encode_prompts(Tok(), texts, setting=None, window=context_window(model), reserve=32, policy="warn",
                         split="test")
    assert cut.limits.max_prompt_len == 64
    assert (cut.truncation.prompts, cut.truncation.prompts_cut) == (3, 1)
    assert [len(i) for i in cut.ids] == [10, 64, 64]


# --- generation ----------------------------------------------------------------------------------------

def test_generate_on_t5_is_greedy_decoding_and_does_not_depend_on_the_batch(tiny_t5):
    from lolkit.generation import GenerationConfig, generate, sample_tokens

    model, tok, _ = _t5(tiny_t5, trainable=False)
    prompts = ["What colour is a tomato?", "Numbers:", "Tell me the colour of a cherry, please."]
    cfg = GenerationConfig(max_new_tokens=6, batch_size=3)
    together = generate(model, tok, prompts, cfg)
    alone = [generate(model, tok, [p], GenerationConfig(max_new_tokens=6, batch_size=1))[0] for p in prompts]
    assert together == alone
    # the same tokens as an explicit greedy loop over the decoder, each one the argmax of its step
    ids = [tok(p)["input_ids"] for p in prompts]
    sampled = sample_tokens(model, ids, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=6,
                            do_sample=False, batch_size=2)
    start = model.generation_config.decoder_start_token_id
    for p, (toks, finished) in zip(ids, sampled, strict=True):
        dec = [start]
        with torch.no_grad():
            for _ in range(6):
                logits = model(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec])).logits[0, -1]
                dec.append(int(logits.argmax()))
                if dec[-1] == tok.eos_token_id:
                    break
        assert toks == dec[1:] and finished == (dec[-1] == tok.eos_token_id)


def test_generate_and_eval_from_the_cli_on_t5(tiny_t5, tmp_path, cli):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prompt": p} for i, p in
                                                 enumerate(["What colour is a lime?", "Numbers:"])])
    res = cli("generate", "--model", tiny_t5, "--data", prompts, "--output", tmp_path / "g.jsonl",
              "--num-samples", "2", "--max-new-tokens", "5", "--quiet")
    assert res.code == 0, res
    rows = read_jsonl(tmp_path / "g.jsonl")
    assert {r["meta"]["sample"] for r in rows} <= {0, 1} and all(r["response"].strip() for r in rows)
    res = cli("eval", "--model", tiny_t5, "--data", prompts, "--output-dir", tmp_path / "ev", "--reward", "colours",
              "--set", "eval.max_new_tokens=5", "--metrics", "ppl", "--quiet")
    assert res.code == 0, res
    summary = read_json(tmp_path / "ev" / "summary.json")
    assert summary["num_generations"] == 2 and "reward_mean" in summary and "ppl_tokens" in summary
    assert summary["truncation"]["test"]["prompts"] == 2


# --- training from the CLI -------------------------------------------------------------------------------

def _mean(rows, key, part):
    vals = [r[key] for r in rows]
    k = max(1, len(vals) // 4)
    return sum(vals[:k] if part == "head" else vals[-k:]) / k


def test_a_lol_trains_a_t5_from_the_cli_and_lowers_its_nll(tiny_t5, tmp_path, cli):
    run = tmp_path / "alol"
    res = cli("train", "--algo", "a_lol", "--model", tiny_t5, "--max-steps", "16", "--output-dir", run, "--lr", "3e-3",
              "--set", f"algo.cache_dir={tmp_path / 'c'}", *FAST)
    assert res.code == 0, res
    rows = read_metrics(run)
    assert len(rows) == 16 and all(math.isfinite(r["loss"]) for r in rows)
    assert _mean(rows, "nll", "tail") < 0.6 * _mean(rows, "nll", "head")
    assert read_json(run / "run.json")["config"]["model"]["name"] == tiny_t5
    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(run / "final")  # the final model is a plain T5 folder


def test_dpo_trains_a_t5_from_the_cli_and_lowers_its_loss(tiny_t5, tmp_path, cli):
    rows = [{"id": i, "prompt": f"What colour is a {o}?", "chosen": f"a {o} is {c}.", "rejected": "i do not know."}
            for i, (o, c) in enumerate([("tomato", "red"), ("lime", "green"), ("crow", "black"), ("sky", "blue")] * 2)]
    data = write_jsonl(tmp_path / "pref.jsonl", rows)
    run = tmp_path / "dpo"
    res = cli("train", "--algo", "dpo", "--model", tiny_t5, "--data", data, "--max-steps", "8", "--batch-size", "4",
              "--lr", "3e-3", "--output-dir", run, "--set", "data.val_fraction=0", "--set",
              f"algo.cache_dir={tmp_path / 'c'}", "--quiet")
    assert res.code == 0, res
    m = read_metrics(run)
    assert m[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1: Δ = 0
    assert m[-1]["loss"] < 0.5 * math.log(2) and m[-1]["rewards/margins"] > 0


def _cfg(tmp_path, name, model, **kw):
    from lolkit.config import TrainConfig, build

    base = {"batch_size": 8, "eval_prompts": 4, "optim": {"lr": 3e-3}, "eval": {"max_new_tokens": 6},
            "model": {"name": model}, "output_dir": str(tmp_path / name)}
    return build(TrainConfig, base, {**kw, "algo": {"cache_dir": str(tmp_path / "cache"), **kw.get("algo", {})}})


def test_t5_reference_cache_and_resume_match_an_uninterrupted_run(tiny_t5, tmp_path):
    """4 steps == 2 steps + resume + 2 steps, bit for bit; the second run reads the reference pass from
    the cache, and what it reads equals a fresh computation."""
    import shutil

    from safetensors.torch import load_file

    from lolkit.engine.reference import compute_reference
    from lolkit.train import train

    algo = {"name": "a_lol_seq"}
    full = train(_cfg(tmp_path, "full", tiny_t5, algo=algo, max_steps=4, save_every=2), quiet=True)
    cut = train(_cfg(tmp_path, "cut", tiny_t5, algo=algo, max_steps=4, save_every=2), quiet=True)
    assert read_json(full / "engine.json")["reference"]["cached"] is False
    assert read_json(cut / "engine.json")["reference"]["cached"] is True
    shutil.rmtree(cut / "checkpoints" / "step-4")
    shutil.rmtree(cut / "final")
    resumed = train(_cfg(tmp_path, "cut", tiny_t5, algo=algo, max_steps=4, save_every=2), resume=True, quiet=True)
    a, b = load_file(full / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "step_time"} for r in rows]  # noqa: E731
    assert strip(read_metrics(full)) == strip(read_metrics(resumed))
    # the cached scores are the reference model's log-probs of the training responses
    entry = next((tmp_path / "cache").glob("ref-*"))
    cached = load_file(entry / "reference.safetensors")
    from lolkit.algorithms import get_algorithm
    from lolkit.data.dataset import load_train_data

    model, tok, _ = _t5(tiny_t5, trainable=False)
    cfg = _cfg(tmp_path, "x", tiny_t5, algo=algo)
    data = load_train_data(cfg.data, tok, get_algorithm("a_lol_seq"), window=context_window(model))
    seq, tokens = compute_reference(model, [e.encoded for e in data.examples], tok.pad_token_id, 8,
                                    disable_adapter=False)
    torch.testing.assert_close(cached["seq_logps"], seq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached["token_logps"], torch.cat(tokens), atol=1e-5, rtol=1e-5)


def test_gradient_accumulation_is_invariant_for_t5(tiny_t5, tmp_path):
    """1 × 8 == 8 × 1: a row's encoder and decoder outputs do not depend on the padding its batch carries."""
    from safetensors.torch import load_file

    from lolkit.train import train

    one = train(_cfg(tmp_path, "a", tiny_t5, algo={"name": "a_lol"}, max_steps=2, micro_batch_size=8, save_every=0),
                quiet=True)
    acc = train(_cfg(tmp_path, "b", tiny_t5, algo={"name": "a_lol"}, max_steps=2, micro_batch_size=1, save_every=0),
                quiet=True)
    a, b = load_file(one / "final" / "model.safetensors"), load_file(acc / "final" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    for ra, rb in zip(read_metrics(one), read_metrics(acc), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)


@pytest.mark.parametrize("task", ["numbers", "dates"])
def test_the_synthetic_tasks_train_a_t5_offline(task, tiny_t5, tmp_path, cli):
    """RL4LMs' synthetic tasks with an encoder–decoder policy: the value head is cross-fitted over the
    encoder's states of the prompts (the tasks have one validation prompt, too few for the reference
    value), and validation generates from the decoder."""
    run = tmp_path / task
    res = cli("train", "--algo", "a_lol", "--model", tiny_t5, "--max-steps", "4", "--output-dir", run, "--lr", "3e-3",
              "--set", f"data.task={task}", "--set", "algo.value_source=data", "--set", f"algo.cache_dir={tmp_path / 'c'}", *FAST)
    assert res.code == 0, res
    rows = read_metrics(run)
    assert len(rows) == 4 and 0.0 <= rows[-1]["val_reward"] <= 1.0
    value = read_json(run / "engine.json")["value"]
    assert value["source"] == "data" and value["folds"] >= 2


def test_value_features_are_the_encoder_states_of_each_prompt(tiny_t5):
    from lolkit.engine.advantage import prompt_features

    model, tok, _ = _t5(tiny_t5, trainable=False)
    prompts = ["What colour is a tomato?", "Numbers:"]
    feats = prompt_features(model, tok, prompts, max_prompt_len=64)
    for p, f in zip(prompts, feats, strict=True):
        ids = torch.tensor([tok(p)["input_ids"]])
        with torch.no_grad():
            enc = model.get_encoder()(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(f, enc, atol=1e-6, rtol=1e-6)


def test_lora_on_t5_trains_the_adapter_with_the_base_as_reference(tiny_t5, tmp_path, cli):
    run = tmp_path / "lora"
    res = cli("train", "--algo", "r_lol", "--model", tiny_t5, "--lora", "--max-steps", "2", "--output-dir", run,
              "--set", f"algo.cache_dir={tmp_path / 'c'}", *FAST)
    assert res.code == 0, res
    cfg = read_json(run / "final" / "adapter_config.json")
    assert cfg["task_type"] == "SEQ_2_SEQ_LM" and set(cfg["target_modules"]) >= {"q", "v"}
    assert read_metrics(run)[0]["log_ratio"] == pytest.approx(0.0, abs=1e-5)  # fresh adapter == reference


def test_truncation_is_counted_for_a_t5_run(tiny_t5, tmp_path, cli):
    """The spec's cuts on an encoder–decoder run: prompts kept from their end, responses (with EOS) from
    their start, counted per split in run.json; the encoder then never sees more than 4 prompt tokens."""
    run = tmp_path / "cut"
    res = cli("train", "--algo", "nll", "--model", tiny_t5, "--max-steps", "2", "--output-dir", run,
              "--set", "data.max_prompt_len=4", "--set", "data.max_response_len=3", *FAST)
    assert res.code == 0, res
    t = read_json(run / "run.json")["truncation"]
    assert t["train"]["max_prompt_len"] == 4 and t["train"]["max_response_len"] == 3
    assert t["train"]["prompts_cut"] > 0 and t["train"]["responses_cut"] > 0


@pytest.mark.slow
def test_imdb_positive_continuation_with_a_t5_policy(tiny_t5, tmp_path, cli):
    """A GRUE-style task end to end with an encoder–decoder policy: IMDB reviews (RL4LMs' recipe: the
    prompt is a review's first half) → VADER positive-sentiment reward → a_lol with the reference value
    head → eval on the test prompts."""
    import random

    rng = random.Random(0)
    good = "great wonderful superb lovely moving brilliant funny charming".split()
    bad = "awful boring dull terrible weak painful bland clumsy".split()
    root = tmp_path / "aclImdb"
    for part, n in (("train", 12), ("test", 3)):
        for label, pool in (("pos", good), ("neg", bad)):
            (root / part / label).mkdir(parents=True)
            for i in range(n):
                words = [rng.choice(pool) if k % 3 == 0 else rng.choice(["the", "film", "was", "a", "story"])
                         for k in range(12)]
                (root / part / label / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(" ".join(words))
    res = cli("preprocess", "imdb", tmp_path, "-o", tmp_path / "imdb", "--val-fraction", "0.25")
    assert res.code == 0, res
    spec = tmp_path / "positive.yaml"
    spec.write_text("components:\n  sentiment:\n    type: vader\n")
    res = cli("reward", "--reward", spec, "--input", tmp_path / "imdb" / "train.jsonl", "--output",
              tmp_path / "scored.jsonl", "--quiet")
    assert res.code == 0, res
    run = tmp_path / "run"
    res = cli("train", "--algo", "a_lol", "--model", tiny_t5, "--data", tmp_path / "scored.jsonl", "--val-data",
              tmp_path / "imdb" / "val.jsonl", "--reward", spec, "--max-steps", "3", "--output-dir", run,
              "--lr", "3e-3", "--batch-size", "4", "--set", "eval.max_new_tokens=6", "--set",
              f"algo.cache_dir={tmp_path / 'c'}", "--quiet")
    assert res.code == 0, res
    assert read_json(run / "engine.json")["value"]["source"] == "reference"
    res = cli("eval", "--model", run, "--data", tmp_path / "imdb" / "test.jsonl", "--reward", spec,
              "--set", "eval.max_new_tokens=6", "--quiet")
    assert res.code == 0, res
    summary = read_json(run / "eval" / "summary.json")
    assert summary["num_prompts"] == 6 and 0.0 <= summary["reward_mean"] <= 1.0
