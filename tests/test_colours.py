from collections import Counter

from lolkit.tasks import colours


def test_reward_goldens():
    p = "What colour is a banana?"
    assert colours.score(p, "a banana is yellow.") == {"correct": 0.6, "object": 0.2, "form": 0.2}
    assert colours.score(p, "a banana is green.") == {"correct": 0.0, "object": 0.2, "form": 0.2}
    assert colours.score(p, "yellow.") == {"correct": 0.6, "object": 0.0, "form": 0.2}
    assert colours.score(p, "i do not know.") == {"correct": 0.0, "object": 0.0, "form": 0.2}
    # naming every colour is not an answer; a run-on text loses the form point
    assert colours.score(p, "yellow or green.") == {"correct": 0.0, "object": 0.0, "form": 0.2}
    assert colours.score(p, "a banana is yellow. a banana is yellow.")["form"] == 0.0
    assert colours.score("unrelated prompt", "a banana is yellow.")["correct"] == 0.0


def test_data_is_deterministic_and_mostly_suboptimal():
    a, b = colours.records("train"), colours.records("train")
    assert a == b and len(a) == 96 * 8
    by_prompt: dict[str, Counter] = {}
    for r in a:
        by_prompt.setdefault(r["prompt"], Counter())[r["response"]] += 1
    for prompt, counts in by_prompt.items():
        mode, _ = counts.most_common(1)[0]
        assert colours.score(prompt, mode)["correct"] == 0.0  # the most common answer is wrong
    mean = sum(r["reward"] for r in a) / len(a)
    assert abs(mean - 0.5) < 1e-9
    splits = colours.split_prompts()
    assert {len(v) for v in splits.values()} == {32, 96}
    train_prompts = {p["prompt"] for p in splits["train"]}
    assert not train_prompts & {p["prompt"] for p in splits["test"]}
    assert {p["object"] for p in splits["test"]} == set(colours.OBJECTS)
