"""Text statistics shared by evaluation, comparison and reports: pure functions, no models.

Every definition is written out in docs/evaluation.md; the tests pin hand-worked values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

_WORDS = re.compile(r"\w+|[^\w\s]")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over all texts (whitespace tokens)."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        w = t.split()
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single value)."""
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


# --------------------------------------------------------------------------------------------------
# quality-diversity (CoLA; shared/spec/algorithms.md §4)
# --------------------------------------------------------------------------------------------------
def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv)


def mean_pairwise_similarity(group: Sequence[Sequence[float]]) -> float:
    """Mean cosine over the ordered pairs (i, j), i ≠ j, of one group's embeddings (M ≥ 2).
    Cosine is symmetric, so this equals the mean over the M(M-1)/2 unordered pairs."""
    m = len(group)
    if m < 2:
        raise ValueError("a group needs at least two samples")
    sims = [cosine(group[i], group[j]) for i in range(m) for j in range(i + 1, m)]
    return sum(sims) / len(sims)


def quality_diversity(groups: Sequence[Sequence[Sequence[float]]]) -> tuple[float | None, float | None, int]:
    """``(S, QD, groups used)``: S = mean over groups (of ≥ 2 samples) of the mean pairwise cosine
    within the group; QD = 1 / S, undefined (None) when S ≤ 0. Groups of one sample are skipped;
    with none left S is None too."""
    sims = [mean_pairwise_similarity(g) for g in groups if len(g) >= 2]
    if not sims:
        return None, None, 0
    s = sum(sims) / len(sims)
    return s, (1.0 / s if s > 0 else None), len(sims)


# --------------------------------------------------------------------------------------------------
# extractive fragments (Grusky, Naaman & Artzi 2018, "Newsroom", §4.1)
# --------------------------------------------------------------------------------------------------
def tokens(text: str) -> list[str]:
    """Lower-cased word tokens: runs of word characters, or one punctuation mark."""
    return _WORDS.findall(text.lower())


def extractive_fragments(article: Sequence, summary: Sequence) -> list[list]:
    """Greedy extractive fragments F(A, S): walk the summary left to right; at each position take the
    longest token run that also occurs in the article (ties: the first found), then jump past it;
    a token found nowhere advances by one and makes no fragment. ``article`` may hold separators
    (any non-string object) that never match, so fragments do not cross passage boundaries."""
    frags: list[list] = []
    i = 0
    while i < len(summary):
        best: list = []
        j = 0
        while j < len(article):
            if summary[i] == article[j]:
                a, b = i, j
                while a < len(summary) and b < len(article) and summary[a] == article[b]:
                    a, b = a + 1, b + 1
                if a - i > len(best):
                    best = list(summary[i:a])
                j = b
            else:
                j += 1
        i += max(len(best), 1)
        if best:
            frags.append(best)
    return frags


def coverage_density(knowledge: str | Sequence[str], response: str) -> tuple[float, float] | None:
    """Extractive coverage = Σ|f| / |S| and density = Σ|f|² / |S| of a response S against the
    knowledge A (a text or a list of passages); None when the response has no tokens."""
    summary = tokens(response)
    if not summary:
        return None
    passages = [knowledge] if isinstance(knowledge, str) else list(knowledge)
    article: list = []
    for k, p in enumerate(passages):
        if k:
            article.append(object())  # a separator equal to nothing
        article.extend(tokens(p))
    frags = extractive_fragments(article, summary)
    n = len(summary)
    return sum(len(f) for f in frags) / n, sum(len(f) ** 2 for f in frags) / n


# --------------------------------------------------------------------------------------------------
# perplexity and proportions
# --------------------------------------------------------------------------------------------------
def corpus_perplexity(nlls: Sequence[float], counts: Sequence[int]) -> float | None:
    """Token-level perplexity exp(Σ NLL / Σ tokens) over responses (NLL in nats, summed per response)."""
    total = sum(counts)
    if total == 0:
        return None
    return math.exp(sum(nlls) / total)


Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------------------------------
# the metrics as Hugging Face `evaluate` modules
# --------------------------------------------------------------------------------------------------
MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
# lolkit's own modules, by the name `lolkit eval --metrics` knows them under
MODULES = {"rouge": "rouge", "bleu": "bleu", "chrf": "chrf", "meteor": "meteor", "coverage": "extractive",
           "distinct": "distinct"}


def text_metric_info(description: str, citation: str, inputs: str, references: bool = True):
    """The ``evaluate`` info of one of lolkit's modules: predictions, with one reference text or a list of
    them per prediction (or none)."""
    import datasets
    import evaluate

    text = datasets.Value("string")
    if not references:
        return evaluate.MeasurementInfo(description=description, citation=citation, inputs_description=inputs,
                                        features=datasets.Features({"predictions": text}))
    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=inputs,
                               features=[datasets.Features({"predictions": text, "references": datasets.Sequence(text)}),
                                         datasets.Features({"predictions": text, "references": text})])


def per_reference_batch(predictions: Sequence[str], references: Sequence):
    """The reward components' batch for an ``evaluate`` module's inputs (one text or a list per prediction)."""
    from .rewards.base import Batch

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    return Batch([""] * len(predictions), list(predictions), refs)


def module_result(values: dict[str, list], aggregate: bool) -> dict:
    """A module's output: per-prediction lists, or (``aggregate``) the mean of each over its non-None values."""
    if not aggregate:
        return values
    out = {}
    for key, col in values.items():
        present = [v for v in col if v is not None]
        out[key] = sum(present) / len(present) if present else None
    return out


def hub_modules_cache() -> Path:
    """Where ``evaluate`` keeps the Hub metrics it has downloaded (HF_MODULES_CACHE, else HF_HOME/modules)."""
    import os

    if os.environ.get("HF_MODULES_CACHE"):
        return Path(os.environ["HF_MODULES_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "modules"


def _hub_folder(name: str) -> Path | None:
    """The cached copy of a Hub metric (``rouge`` → evaluate-metric/rouge, ``org/name``), if it is there."""
    folder = name.replace("/", "--") if "/" in name else None
    kinds = ("metric", "comparison", "measurement")
    candidates = [folder] if folder else [f"evaluate-{k}--{name}" for k in kinds]
    root = hub_modules_cache() / "evaluate_modules"
    for sub in ("metrics", "comparisons", "measurements"):
        for c in candidates:
            d = root / sub / c
            if d.is_dir() and any(d.glob(f"*/{name.split('/')[-1]}.py")):
                return d
    return None


def metric_module(spec: str) -> tuple[str, str]:
    """Where an ``evaluate`` module comes from: ``("lolkit", folder)`` for lolkit's own, ``("local", path)``
    for a script or folder on disk, ``("hub", name)`` for a Hub metric already in the local cache.
    Nothing is ever downloaded: anything else is a one-line error."""
    from .errors import LolkitError

    if spec in MODULES:
        return "lolkit", str(MODULES_DIR / MODULES[spec] / f"{MODULES[spec]}.py")
    p = Path(spec).expanduser()
    if p.exists():
        script = p if p.is_file() else p / f"{p.name}.py"
        if script.suffix != ".py" or not script.is_file():
            raise LolkitError(f"--metrics {spec}: not an evaluate module (a .py script, or a folder NAME holding "
                              "NAME.py)")
        return "local", str(script)
    if "/" in spec.rstrip("/") and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise LolkitError(f"--metrics {spec}: no such file or folder")
    if _hub_folder(spec) is not None:
        return "hub", spec
    raise LolkitError(f"--metrics: unknown metric {spec!r}: not one of lolkit's, not an evaluate module on disk, and "
                      f"not a Hub metric in the local cache ({hub_modules_cache()}); lolkit never downloads metrics")


_LOADED: dict[str, object] = {}


def load_metric(spec: str):
    """An ``evaluate`` module instance (kept in memory: no files beside the predictions), loaded from a
    local path, or from the Hub metrics already cached; never from the network."""
    import os

    if spec in _LOADED:
        return _LOADED[spec]
    kind, where = metric_module(spec)
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import evaluate
    from evaluate.loading import (
        CachedEvaluationModuleFactory,
        LocalEvaluationModuleFactory,
        import_main_class,
        init_dynamic_modules,
        init_hf_modules,
    )

    evaluate.logging.set_verbosity_error()
    evaluate.disable_progress_bar()
    if kind == "hub":
        # the user's own cache of Hub modules, where `evaluate.load` put them
        folder = _hub_folder(where)
        init_hf_modules(str(folder.parent.parent.parent))  # its parent on sys.path, as evaluate does
        module = CachedEvaluationModuleFactory(folder.name, module_type=folder.parent.name,
                                               dynamic_modules_path=str(folder.parent.parent)).get_module()
    else:
        # copied into lolkit's cache (not ~/.cache/huggingface) under a package name of its own
        from .models import cache_dir

        dynamic = init_dynamic_modules("lolkit_evaluate_modules", str(cache_dir() / "hf_modules"))
        module = LocalEvaluationModuleFactory(where, dynamic_modules_path=dynamic).get_module()
    instance = import_main_class(module.module_path)(keep_in_memory=True, hash=module.hash)
    _LOADED[spec] = instance
    return instance
