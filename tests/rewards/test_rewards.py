"""Reward components without neural classifiers: golden values worked by hand, the weighted sum,
config errors, VADER and MiniLM similarity."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from lolkit.errors import LolkitError
from lolkit.rewards import get_reward

CAT_REF = "the cat sat on the mat"
CAT_HYP = "the cat is on the mat"


def one(kind: str, **opts):
    """A reward with the single component ``c``."""
    return get_reward({"components": {"c": {"type": kind, **opts}}})


def values(reward, responses, prompts=None, references=None, metas=None):
    prompts = prompts or ["p"] * len(responses)
    return [c["c"] for _, c in reward.score(prompts, responses, references=references, metas=metas)]


# ---------------------------------------------------------------------------------------------------
# lexical
# ---------------------------------------------------------------------------------------------------
TFIDF_CORPUS = ["the cat sat", "the dog sat", "a cat ran"]


def test_tfidf_golden_values(tmp_path):
    """N = 3 documents; terms have >= 2 characters, so "a" is ignored.
    df: the 2, cat 2, sat 2, dog 1, ran 1 → idf = ln((1+3)/(1+df)) + 1: 1 + ln(4/3) (df 2), 1 + ln 2 (df 1).

    "the dog sat": tf·idf = [i2, i1, i2] with i2 = 1.28768, i1 = 1.69315; L2 norm √(2·i2² + i1²) = 2.48657;
    normalised [0.51785, 0.68091, 0.51785], mean 0.57221; 3 < 5 terms → × 3/10 = 0.17166.
    "the the cat zebra": zebra is unknown; tf·idf = [2·i2, i2] → normalised [2/√5, 1/√5], mean 3/(2√5)
    = 0.67082; 2 terms → × 2/10 = 0.13416. No known term → 0."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TFIDF_CORPUS) + "\n")
    state = tmp_path / "tfidf.json"
    r = one("tfidf", corpus=str(corpus), save_state=str(state))
    i2, i1 = 1 + math.log(4 / 3), 1 + math.log(2)
    norm = math.sqrt(2 * i2**2 + i1**2)
    dog = (2 * i2 + i1) / norm / 3
    got = values(r, ["the dog sat", "the the cat zebra", "zebra!"])
    assert got == pytest.approx([dog * 0.3, 3 / (2 * math.sqrt(5)) * 0.2, 0.0], abs=1e-12)
    assert dog == pytest.approx(0.572210, abs=1e-6)
    # the state is JSON (never pickle) and reloads to the same numbers
    saved = json.loads(state.read_text())
    assert saved == {"format": "lolkit-tfidf/1", "num_docs": 3, "df": {"cat": 2, "dog": 1, "ran": 1, "sat": 2, "the": 2}}
    assert values(one("tfidf", state=str(state)), ["the dog sat"]) == pytest.approx([dog * 0.3])
    assert values(one("tfidf", state=str(state), length_penalty=False), ["the dog sat"]) == pytest.approx([dog])


def test_tfidf_matches_scikit_learn():
    """Same numbers as A-LoL's CountVectorizer + TfidfTransformer (mean of the non-zero entries)."""
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    from lolkit.rewards.lexical import TfidfState

    docs = ["The cat sat on the mat.", "A dog barked at the cat!", "Dogs and cats, cats and dogs.", "the end"]
    cv = sk.CountVectorizer().fit(docs)
    tf = sk.TfidfTransformer().fit(cv.transform(docs))
    tests = ["the cat and the dog sat quietly on a mat", "cats", "unknown words only"]
    vec = tf.transform(cv.transform(tests))
    want = [float(vec[i].data.mean()) if vec[i].nnz else 0.0 for i in range(len(tests))]
    state = TfidfState.fit(docs)
    assert [state.score(t, length_penalty=False) for t in tests] == pytest.approx(want, abs=1e-12)


def test_tfidf_fits_on_the_scored_file_or_fails_clearly():
    r = one("tfidf")
    with pytest.raises(LolkitError, match="no fitted state: set 'corpus'"):
        values(r, ["the dog sat"])
    from lolkit.rewards.base import Batch

    r.prepare(Batch(["p"] * 3, TFIDF_CORPUS))
    assert values(r, ["the dog sat"])[0] == pytest.approx(0.171663, abs=1e-6)


def test_distinct_and_length():
    """distinct-2 of "a b a b": bigrams ab, ba, ab → 2 unique / 3; distinct-1: 2 / 4; no bigram → 0.
    length of "one two three four": 4 words; max_length 8 → 4/8; target 2 → max(0, 1 − |4−2|/2) = 0,
    target 5 → 1 − 1/5."""
    assert values(one("distinct"), ["a b a b", "hi"]) == pytest.approx([2 / 3, 0.0])
    assert values(one("distinct", n=1), ["a b a b", "A a"]) == pytest.approx([0.5, 1.0])
    assert values(one("distinct", n=1, lowercase=True), ["A a"]) == pytest.approx([0.5])
    text = ["one two three four"]
    assert values(one("length"), text) == [4.0]
    assert values(one("length", max_length=8), text) == [0.5]
    assert values(one("length", target=2), text) == [0.0]
    assert values(one("length", target=5), text) == pytest.approx([0.8])
    assert one("length").max_value is None and one("length", max_length=8).max_value == 1.0


def test_length_in_tokens(tiny_model, tiny_tokenizer):
    n = len(tiny_tokenizer("a lime is green.", add_special_tokens=False)["input_ids"])
    assert values(one("length", unit="tokens", tokenizer=tiny_model), ["a lime is green."]) == [float(n)]


# ---------------------------------------------------------------------------------------------------
# reference-based
# ---------------------------------------------------------------------------------------------------
def test_rouge_golden_values():
    """ref "the cat sat on the mat", hyp "the cat is on the mat" (6 words each):
    ROUGE-1: 5 shared words → P = R = F = 5/6; ROUGE-2: shared bigrams "the cat", "on the", "the mat"
    of 5 → 3/5; ROUGE-L: LCS "the cat on the mat" = 5 → 5/6. Best of several references."""
    refs = [[CAT_REF]]
    assert values(one("rouge", variant="rouge1"), [CAT_HYP], references=refs) == pytest.approx([5 / 6])
    assert values(one("rouge", variant="rouge2"), [CAT_HYP], references=refs) == pytest.approx([3 / 5])
    assert values(one("rouge"), [CAT_HYP], references=refs) == pytest.approx([5 / 6])
    assert values(one("rouge"), [CAT_HYP], references=[["dogs bark", CAT_HYP]]) == pytest.approx([1.0])


def test_bleu_golden_value():
    """Modified n-gram precisions 5/6, 3/5, 1/4 and 0/3; sacrebleu's default "exp" smoothing replaces
    the zero 4-gram count by 1/2 → 1/6. Equal lengths → brevity penalty 1.
    BLEU = (5/6 · 3/5 · 1/4 · 1/6)^(1/4) = 0.379918 (sacrebleu's 37.99 / 100)."""
    want = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert values(one("bleu"), [CAT_HYP], references=[[CAT_REF]]) == pytest.approx([want], abs=1e-9)
    assert values(one("bleu"), [CAT_REF], references=[[CAT_REF]]) == pytest.approx([1.0])


def test_chrf_golden_value():
    """chrF (β = 2): spaces removed, character n-grams n = 1..6; precision and recall are averaged over
    n and combined as (1 + β²)·P·R / (β²·P + R). Worked here with a 6-line naive count."""
    from collections import Counter

    h, r = CAT_HYP.replace(" ", ""), CAT_REF.replace(" ", "")
    ps, rs = [], []
    for n in range(1, 7):
        hg = Counter(h[i : i + n] for i in range(len(h) - n + 1))
        rg = Counter(r[i : i + n] for i in range(len(r) - n + 1))
        m = sum((hg & rg).values())
        ps.append(m / sum(hg.values()))
        rs.append(m / sum(rg.values()))
    p, rr = sum(ps) / 6, sum(rs) / 6
    want = 5 * p * rr / (4 * p + rr)
    got = values(one("chrf"), [CAT_HYP], references=[[CAT_REF]])
    assert got == pytest.approx([want], abs=1e-12)
    assert got[0] == pytest.approx(0.619252, abs=1e-6)


def test_meteor_golden_values():
    """nltk METEOR, α = 0.9, β = 3, γ = 0.5.
    "the cat is on the mat" vs "the cat sat on the mat": 5 exact matches ("is" ≠ "sat": neither stem
    nor WordNet synonym) → P = R = 5/6, Fmean = P·R / (α·P + (1−α)·R) = 5/6; the matches form 2 chunks
    ("the cat", "on the mat") → penalty γ·(2/5)³ = 0.032 → 5/6 · 0.968 = 0.806667.
    "the cat sat on the rug" vs "… carpet": rug ~ carpet is a WordNet synonym (rug.n.01), so all 6
    match in 1 chunk → 1 − 0.5·(1/6)³ = 0.997685 — proof that the local WordNet is used."""
    r = one("meteor")
    try:
        got = values(r, [CAT_HYP, "the cat sat on the rug"], references=[[CAT_REF], ["the cat sat on the carpet"]])
    except LolkitError as e:
        pytest.skip(f"WordNet not installed: {e}")
    assert got == pytest.approx([5 / 6 * (1 - 0.5 * 0.4**3), 1 - 0.5 * (1 / 6) ** 3], abs=1e-12)


def test_meteor_without_wordnet_is_one_clear_line(tmp_path, monkeypatch):
    import nltk

    from lolkit.rewards import reference

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(reference, "nltk_data_dirs", lambda: [str(tmp_path)])
    with pytest.raises(LolkitError, match="install_wordnet.sh") as e:
        values(one("meteor"), [CAT_HYP], references=[[CAT_REF]])
    assert "\n" not in str(e.value)


def test_missing_reference_names_the_record():
    with pytest.raises(LolkitError, match="item 0: reward component 'c' \\(rouge\\) needs a reference"):
        values(one("rouge"), [CAT_HYP])


# ---------------------------------------------------------------------------------------------------
# combination, specs, errors
# ---------------------------------------------------------------------------------------------------
def test_weighted_sum_keeps_unweighted_components():
    """reward = 2 · distinct-1 − 1 · length/4: "a b a b" → 2 · 0.5 − 1 · 1 = 0; "x y" → 2 · 1 − 0.5 = 1.5.
    max_value = 2 · 1 + max(−1 · 0, −1 · 1) = 2."""
    r = get_reward({"name": "mix", "components": {
        "div": {"type": "distinct", "n": 1, "weight": 2},
        "len": {"type": "length", "max_length": 4, "weight": -1}}})
    assert r.name == "mix" and r.components == ("div", "len") and r.max_value == 2.0
    out = r.score(["p", "p"], ["a b a b", "x y"])
    assert out == [(0.0, {"div": 0.5, "len": 1.0}), (1.5, {"div": 1.0, "len": 0.5})]


def test_builtin_task_reward_unchanged():
    r = get_reward("colours")
    assert r.components == ("correct", "object", "form") and r.max_value == 1.0
    assert r.score(["What colour is a lime?", "What colour is a lime?"], ["a lime is green.", "i do not know."]) == [
        (1.0, {"correct": 0.6, "object": 0.2, "form": 0.2}), (0.2, {"correct": 0.0, "object": 0.0, "form": 0.2})]


def test_callable_component_gets_metas_and_unknown_range():
    r = one("callable", function="tests.reward_helpers:echo_meta")
    assert values(r, ["a", "b"], metas=[{"x": 3}, {}]) == [3.0, 0.0]
    assert r.max_value is None
    assert one("callable", function="tests.reward_helpers:slow_length", kwargs={"scale": 2}, min=0, max=5).max_value == 5
    assert values(one("callable", function="tests.reward_helpers:slow_length", kwargs={"scale": 2}), ["abcd"]) == [2.0]


def test_max_reward_falls_back_to_the_data_when_unknown(tmp_path):
    from lolkit.engine import max_reward

    cfg_path = tmp_path / "r.yaml"
    cfg_path.write_text("components:\n  len: {type: length}\n")
    cfg = SimpleNamespace(algo=SimpleNamespace(max_reward=None), reward=str(cfg_path))
    assert max_reward(cfg, [1.0, 7.0, 3.0]) == 7.0
    cfg.reward = "colours"
    assert max_reward(cfg, [0.2]) == 1.0


def test_yaml_extends_models_and_overrides(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("extends: reddit\nmodels:\n  fluency: /nowhere/cola\ncomponents:\n  tfidf: {weight: 0.5}\n")
    r = get_reward(str(cfg), {"components": {"depth": {"weight": 2}}})
    assert r.name == "my" and r.components == ("fluency", "depth", "updown", "safe", "tfidf")
    parts = {p.name: p for p in r.parts}
    assert parts["fluency"].opts["model"] == "/nowhere/cola" and parts["tfidf"].weight == 0.5
    assert parts["depth"].weight == 2 and r.max_value == 1 + 2 + 1 + 1 + 0.5


@pytest.mark.parametrize("text, match", [
    ("nope: 1\ncomponents: {a: {type: distinct}}\n", "r.yaml: unknown key 'nope'"),
    ("components: {a: {type: distinct, m: 2}}\n", "r.yaml: component 'a' \\(distinct\\): unknown key 'm'"),
    ("components: {a: {type: magic}}\n", "r.yaml: component 'a': unknown type 'magic'"),
    ("components: {a: {type: hf_classifier}}\n", "r.yaml: component 'a' \\(hf_classifier\\): missing required key 'model'"),
    ("models: {b: x}\ncomponents: {a: {type: distinct}}\n", "r.yaml: models: no component named 'b'"),
    ("models: {a: x}\ncomponents: {a: {type: distinct}}\n", "r.yaml: models: component 'a' takes no model"),
    ("components: {a: {type: distinct, weight: heavy}}\n", "r.yaml: component 'a': weight: expected a number"),
    ("components: {a: {type: rouge, measure: g}}\n", "r.yaml: component 'a': measure must be one of f, p, r"),
    ("components: {}\n", "r.yaml: 'components' must be a non-empty mapping"),
    ("components: [a\n", "r.yaml:2: invalid YAML"),
    ("extends: nothing-like-this\ncomponents: {a: {type: distinct}}\n", "unknown reward 'nothing-like-this'"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, match):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(LolkitError, match=match):
        get_reward(str(p))


def test_unknown_reward_and_comet_needs_a_model():
    with pytest.raises(LolkitError, match="unknown reward 'nope'.*preset \\(comet, faithdial, hh, reddit, wow\\)"):
        get_reward("nope")
    with pytest.raises(LolkitError, match="preset:comet: component 'p_valid_model'.*missing required key 'model'.*Keras"):
        get_reward("comet")


# ---------------------------------------------------------------------------------------------------
# VADER and MiniLM
# ---------------------------------------------------------------------------------------------------
def test_vader_sentiment():
    """compound 0.8622 for "I love this, it is great!" → (0.8622 + 1) / 2 = 0.9311 on the default scale."""
    texts = ["I love this, it is great!", "The report is on the table.", "This is terrible and I hate it."]
    mapped = values(one("vader"), texts)
    raw = values(one("vader", output="compound"), texts)
    assert raw[0] == pytest.approx(0.8622) and mapped[0] == pytest.approx(0.9311)
    assert raw[1] == 0.0 and mapped[1] == 0.5
    assert mapped[0] > mapped[1] > mapped[2] and raw[2] < 0
    assert one("vader").max_value == 1.0 and one("vader", output="compound").max_value == 1.0


def test_minilm_similarity():
    r = one("embedding_similarity")
    refs = [["A man is playing a guitar."]] * 3
    got = values(r, ["A man is playing a guitar.", "Someone plays the guitar.", "Stock markets fell sharply today."],
                 references=refs)
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[0] > got[1] > got[2] and got[1] > 0.5
    by_prompt = values(one("embedding_similarity", against="prompt"), ["A man is playing a guitar."],
                       prompts=["A man is playing a guitar."])
    assert by_prompt == pytest.approx([1.0], abs=1e-5)
