"""A reward callable for the bad-input corpus: gives NaN for every response."""


def nan_reward(prompts, responses, references, metas):
    return [float("nan") for _ in responses]
