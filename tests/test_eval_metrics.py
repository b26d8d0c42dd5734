"""Golden values for every eval metric on hand-built inputs (the arithmetic is in the comments)."""

import math

import pytest

from lolkit.data.schema import Record
from lolkit.errors import LolkitError
from lolkit.evaluate import (
    EvalOptions,
    compute_metrics,
    evaluate,
    metric_references,
    parse_metrics,
    reference_metrics,
    response_nll,
    self_bleu,
    summarise,
)
from lolkit.metrics import (
    corpus_perplexity,
    coverage_density,
    extractive_fragments,
    mean_pairwise_similarity,
    quality_diversity,
    tokens,
)
from tests.conftest import read_jsonl, write_jsonl

# sacrebleu sentence BLEU of "a b c d" against "a b c e" (13a tokens, exp smoothing, equal lengths: BP = 1):
# n-gram precisions 3/4, 2/3, 1/2 and 0/1 → the first zero count is smoothed to 1 / (2 × 1) = 1/2;
# BLEU = (3/4 · 2/3 · 1/2 · 1/2)^(1/4) = (1/8)^(1/4) = 2^(-3/4)
BLEU_ABCD_ABCE = 2 ** -0.75  # 0.594604


def test_self_bleu_within_prompt_groups():
    texts = ["a b c d", "a b c e", "x y", "lonely"]
    # prompt 0 has two samples: each against the other; prompt 1's single sample gets None
    out = self_bleu(texts, [[0, 1], [2], [3]])
    assert out[0] == pytest.approx(BLEU_ABCD_ABCE) and out[1] == pytest.approx(BLEU_ABCD_ABCE)
    assert out[2] is None and out[3] is None
    assert self_bleu(["a b c d", "a b c d"], [[0, 1]]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_self_bleu_one_sample_per_prompt_uses_the_file():
    # each response against the other responses of the file (multi-reference BLEU: clipped counts take
    # the max over references, so "a b c d" vs {"a b c e", "x y z w"} is 2^(-3/4) again); "x y z w"
    # shares no unigram with the others: BLEU 0
    out = self_bleu(["a b c d", "a b c e", "x y z w"], [[0], [1], [2]])
    assert out == [pytest.approx(BLEU_ABCD_ABCE), pytest.approx(BLEU_ABCD_ABCE), pytest.approx(0.0)]


def test_quality_diversity_on_hand_built_embeddings():
    g1 = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    # pairs: cos(e1,e2) = 0, cos(e1,e3) = 1/√2, cos(e2,e3) = 1/√2 → mean = (2/√2)/3 = √2/3 ≈ 0.471405
    assert mean_pairwise_similarity(g1) == pytest.approx(math.sqrt(2) / 3)
    g2 = [[1.0, 0.0], [2.0, 0.0]]  # same direction: cosine 1 (scale does not matter)
    s, qd, n = quality_diversity([g1, g2, [[5.0, 5.0]]])  # the one-sample group is skipped
    # S = (√2/3 + 1) / 2 ≈ 0.735702, QD = 1/S ≈ 1.359245
    assert n == 2
    assert s == pytest.approx((math.sqrt(2) / 3 + 1) / 2) and s == pytest.approx(0.735702, abs=1e-6)
    assert qd == pytest.approx(1 / s) and qd == pytest.approx(1.359245, abs=1e-6)
    # opposite directions: S = -1 ≤ 0 → QD undefined; no group of two: both undefined
    assert quality_diversity([[[1.0, 0.0], [-1.0, 0.0]]]) == (pytest.approx(-1.0), None, 1)
    assert quality_diversity([[[1.0, 0.0]]]) == (None, None, 0)


def test_extractive_fragments_hand_worked():
    # A = the cat sat on the mat; S = the cat lay on the mat
    # i=0 "the": A[0..1] matches "the cat" (2), A[4] matches "the" only (1) → f = "the cat", i = 2
    # i=2 "lay": nowhere in A → no fragment, i = 3
    # i=3 "on": A[3..5] matches "on the mat" (3) → f = "on the mat", i = 6 = |S|
    a, s = "The cat sat on the mat.", "the cat lay on the mat"
    assert extractive_fragments(tokens(a), tokens(s)) == [["the", "cat"], ["on", "the", "mat"]]
    cov, dens = coverage_density(a, s)
    assert cov == pytest.approx(5 / 6)  # (2 + 3) / 6
    assert dens == pytest.approx(13 / 6)  # (2² + 3²) / 6
    # a list of passages: fragments do not cross the boundary between "the cat" and "sat on"
    assert coverage_density(["the cat", "sat on"], "cat sat") == (pytest.approx(1.0), pytest.approx(1.0))
    assert coverage_density("the cat sat on", "cat sat") == (pytest.approx(1.0), pytest.approx(2.0))
    assert coverage_density("anything", "  ") is None
    assert coverage_density("x", "y z") == (0.0, 0.0)


def test_perplexity_pools_tokens():
    # exp((2 + 4) / (1 + 3)) = e^1.5; responses without tokens are ignored
    assert corpus_perplexity([2.0, 4.0, 0.0], [1, 3, 0]) == pytest.approx(math.exp(1.5))
    assert corpus_perplexity([], []) is None


def test_response_nll_matches_a_manual_forward(tiny_model):
    import torch

    from lolkit.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(name=tiny_model), trainable=False, device="cpu")
    prompts, responses = ["What colour is a tomato?", "Hi"], ["a tomato is red.", ""]
    got = response_nll(model, tok, prompts, responses, max_prompt_len=64, batch_size=1)
    # manual: one unpadded forward over prompt + response, −Σ log softmax at each response token
    p = tok(prompts[0], add_special_tokens=True)["input_ids"]
    r = tok(responses[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[0]
    manual = -sum(logp[len(p) - 1 + t, r[t]].item() for t in range(len(r)))
    assert got[0][1] == len(r) and got[0][0] == pytest.approx(manual, rel=1e-4)
    assert got[1] == (0.0, 0)
    # batched (right padding) gives the same numbers
    assert response_nll(model, tok, prompts, responses, 64, batch_size=2)[0][0] == pytest.approx(got[0][0], rel=1e-4)


def test_reference_metrics_wiring(monkeypatch):
    from lolkit.rewards.reference import Meteor

    monkeypatch.setattr(Meteor, "score", lambda self, batch: [0.5] * len(batch))  # no WordNet here
    out = reference_metrics(["rouge", "bleu", "chrf", "meteor"], ["a cat sat", "dog"], [["a cat sat"], []])
    assert set(out) == {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "meteor"}
    for k in ("rouge1", "rouge2", "rougeL", "bleu", "chrf"):
        assert out[k][0] == pytest.approx(1.0) and out[k][1] is None  # identical text; no reference → None
    assert out["meteor"] == [0.5, None]


def test_metric_references_and_parse_metrics():
    resp = Record("response", "p", ["the answer"], [None], [{}], "a", {"reference": "gold"})
    assert metric_references(resp) == ["gold"]
    assert metric_references(Record("response", "p", ["the answer"], [None], [{}], "b", {})) == ["the answer"]
    assert metric_references(Record("preference", "p", ["good", "bad"], [None, None], [{}, {}], "c", {})) == ["good"]
    assert metric_references(Record("ranking", "p", ["x", "y"], [0.1, 0.9], [{}, {}], "d", {})) == ["y"]
    assert metric_references(Record("response", "p", [], [], [], "e", {})) == []
    assert parse_metrics(None)[0] == ["self_bleu", "qd", "ppl", "rouge", "bleu", "chrf", "coverage"]
    assert "meteor" in parse_metrics("all")[0] and parse_metrics("none") == ([], True)
    assert parse_metrics("coverage,rouge") == (["rouge", "coverage"], True)
    with pytest.raises(LolkitError, match="unknown metric 'bleurt'"):
        parse_metrics("bleurt")


def test_compute_metrics_and_summary():
    records = [Record("response", "p0", ["a b c d"], [None], [{}], "r0", {"knowledge": "the cat sat on the mat"}),
               Record("response", "p1", ["x"], [None], [{}], "r1", {})]
    rows = [{"_k": 0, "response": "a b c d"}, {"_k": 0, "response": "a b c e"}, {"_k": 1, "response": "the cat"}]
    extra, skipped = compute_metrics(rows, records, ["self_bleu", "bleu", "coverage", "ppl"], explicit=False)
    assert skipped == {"ppl": "no scorer model"}
    assert rows[0]["metrics"]["self_bleu"] == pytest.approx(BLEU_ABCD_ABCE) and "self_bleu" not in rows[2]["metrics"]
    assert rows[0]["metrics"]["bleu"] == pytest.approx(1.0) and rows[1]["metrics"]["bleu"] == pytest.approx(BLEU_ABCD_ABCE)
    assert rows[0]["metrics"]["coverage"] == 0.0 and "coverage" not in rows[2]["metrics"]
    with pytest.raises(LolkitError, match="--metrics qd"):
        compute_metrics([{"_k": 0, "response": "a"}], records, ["qd"], explicit=True)
    # the summary averages each per-response metric over the responses that have it; PPL pools tokens
    full = [{"prompt": "p", "response": "a b", "reward": None, "rewards": {}, "num_tokens": 2, "finished": True,
             "metrics": {"bleu": 0.2, "nll": 2.0, "ppl_tokens": 1}},
            {"prompt": "p", "response": "a c", "reward": None, "rewards": {}, "num_tokens": 4, "finished": True,
             "metrics": {"bleu": 0.6, "coverage": 0.5, "nll": 4.0, "ppl_tokens": 3}}]
    s = summarise(full, {"qd": 2.0})
    assert s["bleu"] == pytest.approx(0.4) and s["coverage"] == 0.5 and s["qd"] == 2.0
    assert s["ppl"] == pytest.approx(math.exp(1.5)) and s["ppl_tokens"] == 4


def test_eval_writes_every_metric(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "test.jsonl", [
        {"id": f"q{i}", "prompt": f"What colour is a {o}?", "response": f"a {o} is red.",
         "meta": {"knowledge": f"The {o} is a red fruit. It is round."}}
        for i, o in enumerate(["tomato", "cherry", "apple"])])
    summary = evaluate(EvalOptions(model=tiny_model, output_dir=str(tmp_path / "ev"), data=str(data), reward="colours",
                                   overrides={"eval": {"do_sample": True, "num_samples": 3, "max_new_tokens": 8}}),
                       quiet=True)
    for key in ("reward_mean", "length_mean", "distinct_1", "distinct_2", "distinct_3", "self_bleu", "qd_similarity",
                "qd", "ppl", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "coverage", "density"):
        assert summary.get(key) is not None, key
    assert summary["qd_groups"] == 3 and summary["qd"] == pytest.approx(1 / summary["qd_similarity"])
    assert summary["metrics_computed"] == ["self_bleu", "qd", "ppl", "rouge", "bleu", "chrf", "coverage"]
    rows = read_jsonl(tmp_path / "ev" / "generations.jsonl")
    assert [(r["id"], r["sample"]) for r in rows] == [(f"q{i}", s) for i in range(3) for s in range(3)]
    nll = sum(r["metrics"]["nll"] for r in rows)
    count = sum(r["metrics"]["ppl_tokens"] for r in rows)
    assert summary["ppl"] == pytest.approx(math.exp(nll / count)) and summary["ppl_tokens"] == count
    assert summary["rouge1"] == pytest.approx(sum(r["metrics"]["rouge1"] for r in rows) / 9)
    # greedy with one sample: QD does not apply and is recorded as skipped, not silently missing
    s2 = evaluate(EvalOptions(model=tiny_model, output_dir=str(tmp_path / "ev2"), data=str(data), reward="colours",
                              overrides={"eval": {"max_new_tokens": 4}}, metrics="default"), quiet=True)
    assert "qd" not in s2 and "qd" in s2["metrics_skipped"]


# --- the metrics as `evaluate` modules (lolkit/evaluate_modules) ------------------------------------------
# Fixed texts, and what lolkit eval computed for them before the metrics moved into evaluate modules
# (the reward components of rewards/reference.py called directly; lolkit.metrics for distinct-n and
# the extractive fragments). The modules must give the same numbers to 1e-9.
HYPS = ["The cat sat on the mat.", "a tomato is red.", "Das Haus ist groß, sehr groß!",
        "running quickly towards the big houses", "ok", "the the the the"]
REFS = [["The cat is sitting on the mat.", "A cat sat on a mat."], ["a tomato is red."], ["Das Haus ist klein."],
        ["he runs quick toward a big house", "houses are big"], ["okay then"], ["the cat"]]
BEFORE = {
    "rouge1": [0.7692307692307692, 1.0, 0.6, 0.6153846153846153, 0.0, 0.3333333333333333],
    "rouge2": [0.5454545454545454, 1.0, 0.5, 0.1818181818181818, 0.0, 0.0],
    "rougeL": [0.7692307692307692, 1.0, 0.6, 0.6153846153846153, 0.0, 0.3333333333333333],
    "bleu": [0.6223329772884783, 1.0000000000000004, 0.20556680845025987, 0.08170609724417774, 0.0, 0.1597357760615681],
    "chrf": [0.5577074553591104, 1.0, 0.4998020563987038, 0.5118270967859647, 0.23404255319148937, 0.17868921870125237],
    "meteor": [0.8757427021441488, 0.996, 0.5555555555555555, 0.4574275362318841, 0.2631578947368421,
               0.22727272727272727],
}
SELF_BLEU_GROUPS = [0.06567274736060395, 0.0716047614494885, 0.0, 0.0, 0.0, None]
SELF_BLEU_FILE = [0.07809849842300637, 0.10682175159905848, 0.0, 0.08116697886877475, 0.0, 0.1244023474812678]
DISTINCT = [0.8148148148148148, 0.9047619047619048, 0.9375]
KNOWLEDGE = ["The cat sat on the mat near the door.", ["A tomato is a red fruit.", "Tomatoes grow in summer."],
             "Houses are big.", "x", "ok ok", "the"]
COVERAGE = [(1.0, 5.285714285714286), (1.0, 2.2), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]


def _close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or abs(g - w) <= 1e-9, (got, want)


def _has_wordnet() -> bool:
    from lolkit.rewards.reference import load_wordnet

    try:
        load_wordnet()
    except LolkitError:
        return False
    return True


@pytest.mark.parametrize("name", ["rouge", "bleu", "chrf", "meteor"])
def test_modules_equal_the_values_eval_computed_before(name):
    from lolkit.metrics import load_metric

    if name == "meteor" and not _has_wordnet():
        pytest.skip("WordNet is not installed (scripts/install_wordnet.sh)")
    out = load_metric(name).compute(predictions=HYPS, references=REFS)
    keys = ("rouge1", "rouge2", "rougeL") if name == "rouge" else (name,)
    assert set(out) == set(keys)
    for k in keys:
        _close(out[k], BEFORE[k])
    # one reference as a plain string, and the means
    single = load_metric(name).compute(predictions=HYPS[1:3], references=[r[0] for r in REFS[1:3]])
    _close(single[keys[0]], BEFORE[keys[0]][1:3])
    mean = load_metric(name).compute(predictions=HYPS, references=REFS, aggregate=True)
    assert abs(mean[keys[0]] - sum(BEFORE[keys[0]]) / 6) <= 1e-9


def test_self_bleu_distinct_and_coverage_through_the_modules():
    from lolkit.metrics import load_metric

    _close(self_bleu(HYPS, [[0, 1], [2, 3, 4], [5]]), SELF_BLEU_GROUPS)
    _close(self_bleu(HYPS, [[i] for i in range(6)]), SELF_BLEU_FILE)
    got = load_metric("distinct").compute(predictions=HYPS)
    _close([got["distinct_1"], got["distinct_2"], got["distinct_3"]], DISTINCT)
    cov = load_metric("coverage").compute(predictions=HYPS, references=[[k] if isinstance(k, str) else k
                                                                        for k in KNOWLEDGE])
    _close(cov["coverage"], [c for c, _ in COVERAGE])
    _close(cov["density"], [d for _, d in COVERAGE])


def test_the_modules_load_with_plain_evaluate_from_their_folder(tmp_path, monkeypatch):
    """What a user does: evaluate.load on the package's folder (a copy goes to the modules cache only)."""
    import evaluate
    from evaluate.loading import init_dynamic_modules

    from lolkit.metrics import MODULES_DIR

    monkeypatch.setattr("evaluate.loading.init_dynamic_modules",
                        lambda *a, **k: init_dynamic_modules("lolkit_test_modules", str(tmp_path)))
    rouge = evaluate.load(str(MODULES_DIR / "rouge"), keep_in_memory=True)
    _close(rouge.compute(predictions=HYPS, references=REFS)["rouge1"], BEFORE["rouge1"])


CUSTOM = '''"""A test module: words per prediction, and the share of predictions that repeat their reference."""

import datasets
import evaluate


class {cls}(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="test", citation="", inputs_description="",
                                   features=datasets.Features({feats}))

    def _compute(self, predictions, references=None):
        out = {{"words": [len(p.split()) for p in predictions], "n": len(predictions)}}
        if references is not None:
            out["exact"] = sum(p == r for p, r in zip(predictions, references)) / len(predictions)
        return out
'''


def _custom(folder, name: str, with_refs: bool):
    feats = ('{"predictions": datasets.Value("string"), "references": datasets.Value("string")}' if with_refs
             else '{"predictions": datasets.Value("string")}')
    d = folder / name
    d.mkdir(parents=True)
    (d / f"{name}.py").write_text(CUSTOM.format(cls=name.title().replace("_", ""), feats=feats))
    return d


def test_metrics_takes_a_local_module_and_a_cached_hub_metric(tmp_path, monkeypatch):
    from lolkit.metrics import metric_module

    local = _custom(tmp_path / "mine", "exact_words", with_refs=True)
    records = [Record("response", "p0", ["a b"], [None], [{}], "r0", {}),
               Record("response", "p1", ["x"], [None], [{}], "r1", {})]
    rows = [{"_k": 0, "response": "a b"}, {"_k": 1, "response": "y z w"}]
    names, explicit = parse_metrics(f"bleu,{local}")
    assert names == ["bleu", str(local)] and explicit
    extra, _ = compute_metrics(rows, records, names, explicit)
    assert extra["exact_words/words"] == 2.5 and extra["exact_words/n"] == 2 and extra["exact_words/exact"] == 0.5
    assert rows[1]["metrics"]["exact_words/words"] == 3.0
    # a Hub metric that evaluate downloaded once: read from its cache, never from the network
    hub = tmp_path / "hf-modules"
    monkeypatch.setenv("HF_MODULES_CACHE", str(hub))
    with pytest.raises(LolkitError, match="unknown metric 'word_count'.*never downloads"):
        parse_metrics("word_count")
    cached = hub / "evaluate_modules" / "metrics" / "evaluate-measurement--word_count" / ("0" * 64)
    cached.mkdir(parents=True)
    for d in (hub, hub / "evaluate_modules", hub / "evaluate_modules" / "metrics", cached.parent, cached):
        (d / "__init__.py").touch()
    (cached / "word_count.py").write_text(CUSTOM.format(cls="WordCount", feats='{"predictions": datasets.Value("string")}'))
    assert metric_module("word_count") == ("hub", "word_count")
    rows = [{"_k": 0, "response": "a b"}, {"_k": 1, "response": "y z w"}]
    extra, _ = compute_metrics(rows, records, parse_metrics("word_count")[0], True)
    assert extra["word_count/words"] == 2.5 and "word_count/exact" not in extra
