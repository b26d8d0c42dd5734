"""``hf_classifier`` and the A-LoL presets, on tiny random models of the real architectures built
here (RoBERTa, GPT-2 as DialogRPT, GPT-NeoX as OpenAssistant's reward model): every value must equal
a manual, unbatched forward pass of the same model on the text the preset is meant to build."""

from __future__ import annotations

import json
import math

import pytest

from lolkit.errors import LolkitError
from lolkit.rewards import get_reward

torch = pytest.importorskip("torch")

TEXTS = ["The cat sat on the mat.", "Dogs bark", "I think that this is a much longer answer about cats and dogs."]
CORPUS = TEXTS + ["Hello there, how are you today?", "Knowledge: cats are mammals.", "PersonX eats food",
                  "as a result, PersonX feels happy", "Human: hi Assistant: hello"]


def _bpe(specials: list[str], vocab_size: int = 300):
    from lolkit.tiny import train_bpe

    return train_bpe(CORPUS, specials, vocab_size)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Directories of tiny random classifiers: roberta2 (CoLA-like, 2 labels), roberta1 (one logit, the
    COMET critic's shape), gpt2 (DialogRPT-like, one logit, no pad token), neox_rm (OpenAssistant
    gpt_neox_reward_model format) and neox_cls (GPTNeoXForSequenceClassification)."""
    from tokenizers import processors
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        GPTNeoXConfig,
        GPTNeoXForSequenceClassification,
        GPTNeoXModel,
        PreTrainedTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    root = tmp_path_factory.mktemp("tiny-classifiers")
    out: dict = {}
    torch.manual_seed(0)

    rt = _bpe(["<s>", "<pad>", "</s>", "<unk>"])
    rt.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    rtok = PreTrainedTokenizerFast(tokenizer_object=rt, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", pad_token="<pad>", unk_token="<unk>")
    for name, labels in (("roberta2", 2), ("roberta1", 1)):
        cfg = RobertaConfig(vocab_size=len(rtok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2, num_labels=labels)
        if labels == 2:
            cfg.id2label, cfg.label2id = {0: "unacceptable", 1: "acceptable"}, {"unacceptable": 0, "acceptable": 1}
        RobertaForSequenceClassification(cfg).save_pretrained(root / name)
        rtok.save_pretrained(root / name)
        out[name] = str(root / name)

    gt = _bpe(["<|endoftext|>"])
    gtok = PreTrainedTokenizerFast(tokenizer_object=gt, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    gcfg = GPT2Config(vocab_size=len(gtok), n_embd=32, n_layer=2, n_head=2, n_positions=512, num_labels=1,
                      pad_token_id=None, eos_token_id=0, bos_token_id=0)
    GPT2ForSequenceClassification(gcfg).save_pretrained(root / "gpt2")
    gtok.save_pretrained(root / "gpt2")
    out["gpt2"] = str(root / "gpt2")

    nt = _bpe(["<|endoftext|>", "<|padding|>", "<|prompter|>", "<|assistant|>"])
    ntok = PreTrainedTokenizerFast(tokenizer_object=nt, eos_token="<|endoftext|>", pad_token="<|padding|>")
    ncfg = GPTNeoXConfig(vocab_size=len(ntok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=1024, eos_token_id=0, pad_token_id=1)
    body = GPTNeoXModel(ncfg).eval()
    head = torch.nn.Linear(32, 1)
    d = root / "neox_rm"
    d.mkdir()
    from safetensors.torch import save_file

    state = {f"gpt_neox.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state.update({"out_proj.weight": head.weight.detach().clone(), "out_proj.bias": head.bias.detach().clone()})
    save_file(state, str(d / "model.safetensors"))
    raw = ncfg.to_dict()
    raw.update({"model_type": "gpt_neox_reward_model", "architectures": ["GPTNeoXRewardModel"], "pooling": "last"})
    (d / "config.json").write_text(json.dumps(raw))
    ntok.save_pretrained(d)
    out["neox_rm"] = str(d)
    out["neox_rm_parts"] = (body, head, ntok)

    ccfg = GPTNeoXConfig(**{**ncfg.to_dict(), "num_labels": 1})
    GPTNeoXForSequenceClassification(ccfg).save_pretrained(root / "neox_cls")
    ntok.save_pretrained(root / "neox_cls")
    out["neox_cls"] = str(root / "neox_cls")
    return out


def manual_logits(path: str, text: str, pair: str | None = None) -> torch.Tensor:
    """One text, no padding, no batching: the reference forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    enc = tok(text, pair, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[0].float()


def neox_rm_manual(tiny, text: str) -> float:
    body, head, tok = tiny["neox_rm_parts"]
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(torch.sigmoid(head(body(input_ids=ids).last_hidden_state[0, -1]))[0])


def score(spec, prompts, responses, **kw):
    return get_reward(spec).score(prompts, responses, **kw)


def comp(path: str, **opts) -> dict:
    return {"components": {"c": {"type": "hf_classifier", "model": path, "batch_size": 2, **opts}}}


# ---------------------------------------------------------------------------------------------------
def test_output_modes_match_a_manual_forward(tiny):
    path = tiny["roberta2"]
    logits = [manual_logits(path, t) for t in TEXTS]
    p = ["x"] * 3

    def got(**opts):
        return [c["c"] for _, c in score(comp(path, **opts), p, TEXTS)]

    assert got() == pytest.approx([float(torch.softmax(z, -1)[1]) for z in logits], abs=1e-5)
    assert got(label="unacceptable") == pytest.approx([float(torch.softmax(z, -1)[0]) for z in logits], abs=1e-5)
    assert got(output="sigmoid", label=1) == pytest.approx([float(torch.sigmoid(z[1])) for z in logits], abs=1e-5)
    assert got(output="logit") == pytest.approx([float(z[0]) for z in logits], abs=1e-5)
    assert got(output="argmax") == [float(z.argmax()) for z in logits]
    assert get_reward(comp(path)).max_value == 1.0 and get_reward(comp(path, output="logit")).max_value is None


def test_input_modes_match_a_manual_forward(tiny):
    prompts = ["Hello there", "how are you today?", "Hi"]
    # decoder (DialogRPT-like): context<|endoftext|>response, padded in a batch of different lengths
    g = tiny["gpt2"]
    got = [c["c"] for _, c in score(comp(g, input="joined", separator="<|endoftext|>", output="sigmoid"), prompts, TEXTS)]
    want = [float(torch.sigmoid(manual_logits(g, f"{p}<|endoftext|>{r}")[0])) for p, r in zip(prompts, TEXTS, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)
    # a response ending in the EOS token that GPT-2 tokenizers pad with is still read at its true end
    ends = ["yes<|endoftext|>", "no", "maybe later<|endoftext|>"]
    got = [c["c"] for _, c in score(comp(g, output="sigmoid"), prompts, ends)]
    assert got == pytest.approx([float(torch.sigmoid(manual_logits(g, t)[0])) for t in ends], abs=1e-5)
    # encoder text pair (prompt, response)
    r2 = tiny["roberta2"]
    got = [c["c"] for _, c in score(comp(r2, input="pair"), prompts, TEXTS)]
    assert got == pytest.approx([float(torch.softmax(manual_logits(r2, p, t), -1)[1]) for p, t in zip(prompts, TEXTS, strict=True)],
                                abs=1e-5)
    # templates with meta fields and the joined history
    metas = [{"knowledge": "cats are mammals", "history": ["hi", "hello"]}] * 3
    spec = comp(r2, text="{meta[knowledge]}", text_pair="{history} | {response}", separator=" / ", label=0)
    got = [c["c"] for _, c in score(spec, prompts, TEXTS, metas=metas)]
    want = [float(torch.softmax(manual_logits(r2, "cats are mammals", f"hi / hello | {t}"), -1)[0]) for t in TEXTS]
    assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(LolkitError, match="item 0: reward component 'c': the template .* needs 'knowledge'"):
        score(spec, prompts, TEXTS)


def test_classifier_errors(tiny):
    with pytest.raises(LolkitError, match="unknown label 'good' \\(this model's labels: acceptable, unacceptable\\)"):
        score(comp(tiny["roberta2"], label="good"), ["p"], ["r"])
    with pytest.raises(LolkitError, match="output: prob needs at least two labels"):
        score(comp(tiny["roberta1"]), ["p"], ["r"])
    with pytest.raises(LolkitError, match="label 5 out of range"):
        score(comp(tiny["roberta2"], label=5), ["p"], ["r"])
    with pytest.raises(LolkitError, match="cannot be reached"):  # a hub id, offline: fails fast and clearly
        score(comp("some-org/some-classifier"), ["p"], ["r"])


# ---------------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------------
def test_reddit_preset_code_path(tiny, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    spec = {"extends": "reddit",
            "models": {"fluency": tiny["roberta2"], "depth": tiny["gpt2"], "updown": tiny["gpt2"], "safe": tiny["roberta2"]},
            "components": {"tfidf": {"corpus": str(corpus)}}}
    r = get_reward(spec)
    assert r.components == ("fluency", "depth", "updown", "safe", "tfidf") and r.max_value == 5.0
    parents = ["Hello there", "how are you today?", "Hi"]
    out = r.score(parents, TEXTS)
    from lolkit.rewards.lexical import TfidfState

    tf = TfidfState.fit(CORPUS)
    for (total, c), p, t in zip(out, parents, TEXTS, strict=True):
        assert c["fluency"] == pytest.approx(float(torch.softmax(manual_logits(tiny["roberta2"], t), -1)[1]), abs=1e-5)
        depth = float(torch.sigmoid(manual_logits(tiny["gpt2"], f"{p}<|endoftext|>{t}")[0]))
        assert c["depth"] == pytest.approx(depth, abs=1e-5) and c["updown"] == pytest.approx(depth, abs=1e-5)
        assert c["safe"] == pytest.approx(float(torch.softmax(manual_logits(tiny["roberta2"], p, t), -1)[0]), abs=1e-5)
        assert c["tfidf"] == pytest.approx(tf.score(t))
        assert total == pytest.approx(sum(c.values()), abs=1e-9)


@pytest.mark.parametrize("preset", ["wow", "faithdial"])
def test_wow_and_faithdial_preset_code_path(tiny, preset):
    spec = {"extends": preset, "models": {"fluency": tiny["roberta2"], "faithdial": tiny["roberta2"],
                                          "depth": tiny["gpt2"]}}
    r = get_reward(spec)
    from lolkit.rewards.base import Batch

    metas = [{"knowledge": "cats are mammals.", "history": ["hi there", "tell me about cats"]}] * 3
    prompts = ["Knowledge: cats are mammals.<|endoftext|>hi there<|endoftext|>tell me about cats<|endoftext|>"] * 3
    r.prepare(Batch(prompts, TEXTS))  # TF-IDF fitted on the responses being scored
    out = r.score(prompts, TEXTS, metas=metas)
    for (_, c), t in zip(out, TEXTS, strict=True):
        faith = torch.softmax(manual_logits(tiny["roberta2"], "cats are mammals.", t), -1)[0]
        assert c["faithdial"] == pytest.approx(float(faith), abs=1e-5)
        depth = manual_logits(tiny["gpt2"], f"hi there<|endoftext|>tell me about cats<|endoftext|>{t}")[0]
        assert c["depth"] == pytest.approx(float(torch.sigmoid(depth)), abs=1e-5)
        assert 0 <= c["tfidf"] <= 1 and set(c) == {"fluency", "faithdial", "depth", "tfidf"}


def test_hh_preset_code_path(tiny):
    from lolkit.rewards.classifier import oasst_text

    prompt = "\n\nHuman: How do I bake bread?\n\nAssistant: With flour.\n\nHuman: And then?\n\nAssistant:"
    text = oasst_text(prompt, "Knead it.", "<|endoftext|>")
    assert text == ("<|prompter|>How do I bake bread?<|endoftext|><|assistant|>With flour.<|endoftext|>"
                    "<|prompter|>And then?<|endoftext|><|assistant|>Knead it.<|endoftext|>")
    msgs = [{"role": "user", "content": "How do I bake bread?"}]
    assert oasst_text(msgs, "Knead it.", "<|endoftext|>") == oasst_text(
        "A chat between a human and an assistant. ### Human: How do I bake bread? ### Assistant:", "Knead it.",
        "<|endoftext|>") == "<|prompter|>How do I bake bread?<|endoftext|><|assistant|>Knead it.<|endoftext|>"
    responses = ["Knead it.", "Bake it at 220 degrees for about forty minutes, then let it cool.", "No."]
    out = get_reward({"extends": "hh", "models": {"hh_rm": tiny["neox_rm"]}}).score([prompt] * 3, responses)
    want = [neox_rm_manual(tiny, oasst_text(prompt, r, "<|endoftext|>")) for r in responses]
    assert [c["hh_rm"] for _, c in out] == pytest.approx(want, abs=1e-5)
    assert [t for t, _ in out] == pytest.approx(want, abs=1e-9)
    # the same preset with a transformers GPTNeoXForSequenceClassification
    out = get_reward({"extends": "hh", "models": {"hh_rm": tiny["neox_cls"]}}).score([prompt] * 3, responses)
    want = [float(torch.sigmoid(manual_logits(tiny["neox_cls"], oasst_text(prompt, r, "<|endoftext|>"))[0]))
            for r in responses]
    assert [c["hh_rm"] for _, c in out] == pytest.approx(want, abs=1e-5)


def test_comet_preset_code_path(tiny):
    r = get_reward({"extends": "comet", "models": {"p_valid_model": tiny["roberta1"]}})
    metas = [{"head": "PersonX eats food", "relation": "xReact"}, {}]
    prompts = ["ignored", "<head> PersonX eats food </head> <relation> xWant </relation> [GEN]"]
    out = r.score(prompts, ["happy", "to sleep"], metas=metas)
    want = [torch.sigmoid(manual_logits(tiny["roberta1"], "Alex eats food", "as a result, Alex feels happy")[0]),
            torch.sigmoid(manual_logits(tiny["roberta1"], "Alex eats food", "as a result, Alex wants to sleep")[0])]
    assert [c["p_valid_model"] for _, c in out] == pytest.approx([float(w) for w in want], abs=1e-5)
    with pytest.raises(LolkitError, match="relation 'isA' has no critic phrase"):
        r.score(["p"], ["x"], metas=[{"head": "a", "relation": "isA"}])


def test_cli_scores_a_preset_with_model_overrides(tmp_path, cli, tiny):
    from ..conftest import read_jsonl, write_jsonl

    data = write_jsonl(tmp_path / "in.jsonl", [
        {"id": f"r{i}", "prompt": p, "response": t} for i, (p, t) in enumerate(zip(["Hi", "Hello there", "Yo"], TEXTS, strict=True))])
    out = tmp_path / "out.jsonl"
    sets = [f"components.{n}.model={tiny[m]}" for n, m in
            (("fluency", "roberta2"), ("depth", "gpt2"), ("updown", "gpt2"), ("safe", "roberta2"))]
    args = [a for s in sets for a in ("--set", s)]
    res = cli("reward", "--reward", "reddit", "--input", data, "--output", out, "--quiet", *args)
    assert res.code == 0, res
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
    for r in rows:
        assert list(r["rewards"]) == ["fluency", "depth", "updown", "safe", "tfidf"]
        assert r["reward"] == pytest.approx(sum(r["rewards"].values()), abs=1e-9)
        assert all(math.isfinite(v) for v in r["rewards"].values())
