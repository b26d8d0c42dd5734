import random

import torch

from lolkit.data.tokenize import Encoded, collate, encode_pair, group_by_length, micro_batches


def test_truncation_and_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, response = "What colour is a banana?", "a banana is yellow."
    p_ids = tok(prompt)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    full = encode_pair(tok, prompt, response, 100, 100)
    assert full.prompt_ids == tuple(p_ids)
    assert full.response_ids == tuple(r_ids) + (tok.eos_token_id,) and not full.truncated
    # prompt truncated on the left: its end is kept
    short = encode_pair(tok, prompt, response, 3, 100)
    assert short.prompt_ids == tuple(p_ids[-3:])
    # a response that fits exactly with its EOS is not truncated
    exact = encode_pair(tok, prompt, response, 100, len(r_ids) + 1)
    assert exact.response_ids[-1] == tok.eos_token_id and not exact.truncated
    # one token shorter: the response fills max_response_len and loses its EOS
    fill = encode_pair(tok, prompt, response, 100, len(r_ids))
    assert fill.response_ids == tuple(r_ids) and fill.truncated
    cut = encode_pair(tok, prompt, response, 100, 2)
    assert cut.response_ids == tuple(r_ids[:2]) and cut.truncated


def test_collate_masks_exactly_the_response_tokens():
    items = [Encoded((5, 6, 7), (8, 9, 1), False), Encoded((5,), (10, 1), False)]
    b = collate(items, [0, 1], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 1], [5, 10, 1, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    targets = b.input_ids[:, 1:]
    assert targets[0][b.response_mask[0].bool()].tolist() == [8, 9, 1]
    assert targets[1][b.response_mask[1].bool()].tolist() == [10, 1]
    assert b.pad_tokens == 3 and b.total_tokens == 12


def _pad_fraction(groups, lengths):
    pad = total = 0
    for g in groups:
        w = max(lengths[i] for i in g)
        pad += sum(w - lengths[i] for i in g)
        total += w * len(g)
    return pad / total


def test_length_grouping_cuts_padding_and_keeps_every_example_once():
    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(3.5, 0.8)) + 1 for _ in range(4000)]  # long-tailed
    order = list(range(len(lengths)))
    rng.shuffle(order)
    grouped = group_by_length(order, lengths, 16, random.Random(1))
    naive = [order[k : k + 16] for k in range(0, len(order), 16)]
    assert sorted(i for g in grouped for i in g) == sorted(order)  # 4000 = 250 × 16: nothing dropped
    assert _pad_fraction(grouped, lengths) < 0.05 < _pad_fraction(naive, lengths)


def test_micro_batches_partition_a_group():
    lengths = [3, 9, 1, 7, 5, 2]
    parts = micro_batches([0, 1, 2, 3, 4, 5], lengths, 4)
    assert parts == [[1, 3, 4, 0], [5, 2]]
    assert torch.tensor([i for p in parts for i in p]).sort().values.tolist() == list(range(6))


def test_encode_texts_equals_the_tokenizers_own_call(tiny_tokenizer):
    from lolkit.data.tokenize import CHECKED, encode_texts, render_prompt

    tok = tiny_tokenizer
    rng = random.Random(0)
    words = "the red tomato <|im_start|> banana <|endoftext|> é 12 ?! \n".split(" ")
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(3 * CHECKED)]
    texts += [render_prompt(tok, [{"role": "user", "content": t}]) for t in texts[:5]]
    for special in (True, False):
        assert encode_texts(tok, texts, special) == tok(texts, add_special_tokens=special)["input_ids"]
    assert encode_texts(tok, [], True) == [] and encode_texts(tok, texts[:3], False) == tok(texts[:3], add_special_tokens=False)["input_ids"]


def test_encode_texts_falls_back_when_the_python_call_differs(tiny_tokenizer):
    """A tokenizer class that changes the ids in Python (here: a marker token first) is caught by the
    check on each batch's first texts, and the whole batch then goes through its own call."""
    from lolkit.data.tokenize import CHECKED, encode_texts

    class Marked:
        backend_tokenizer = tiny_tokenizer.backend_tokenizer

        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [[7] + ids for ids in tiny_tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]}

    texts = [f"colour number {i}" for i in range(2 * CHECKED + 3)]
    assert encode_texts(Marked(), texts, True) == Marked()(texts)["input_ids"]
