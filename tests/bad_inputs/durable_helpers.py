"""Reward callables for the durability cases of the bad-input corpus (cases_durable.yaml)."""


def odd_signature(text):
    """Parameters that name neither one response nor a batch: lolkit cannot tell how to call it."""
    return 1.0
