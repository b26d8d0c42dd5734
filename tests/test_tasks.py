"""The RL4LMs synthetic tasks (lolkit.tasks.numbers, lolkit.tasks.dates): their rewards and registration."""

import pytest

from lolkit.tasks import dates, numbers


def test_numbers_reward_matches_rl4lms_definition():
    assert numbers.increasing_reward("1 2 3 4 5 6 7 8 9 10") == 1.0
    assert numbers.increasing_reward("1 2 3") == pytest.approx(3 / 10)  # min_tokens/2 = 10 words at least
    assert numbers.increasing_reward("5 2 7") == pytest.approx(1 / 10)  # the run stops at the first non-increase
    assert numbers.increasing_reward("a 1 b 2 c 3 d 4 e 5 f 6") == pytest.approx(6 / 12)  # words count, numbers run
    assert numbers.increasing_reward("no numbers here") == 0.0
    assert numbers.increasing_reward(" ".join(map(str, range(30)))) == 1.0  # 30 / max(30, 10)
    # "nan" parses as a float: RL4LMs' test `x > last` ends the run there ("x <= last" let NaN continue it,
    # so ten "nan" words scored the maximum, a reward PPO could exploit)
    assert numbers.increasing_reward("1 nan 2", min_tokens=2) == pytest.approx(1 / 3)
    assert numbers.increasing_reward(" ".join(["nan"] * 10)) == pytest.approx(1 / 10)
    assert numbers.increasing_reward("1 2 nan 3 4 5 6 7 8 9") == pytest.approx(2 / 10)
    assert numbers.increasing_reward("1 2 inf 3") == pytest.approx(3 / 10)  # inf is larger than 2, then nothing is


def test_dates_reward_and_registration():
    assert dates.score("", "it was on 2024-01-31.") == {"date": 1.0}
    assert dates.score("", "it was on 2024-1-31.") == {"date": 0.0}
    from lolkit.rewards import get_reward

    assert get_reward("dates").score(["p"], ["x 1999-12-31 y"])[0][0] == 1.0
    assert get_reward("numbers").score(["p"], ["1 2 3"])[0][0] == pytest.approx(0.3)
    rows = numbers.records("train")
    assert rows and all(r["reward"] == numbers.score(r["prompt"], r["response"])["increasing"] for r in rows)
