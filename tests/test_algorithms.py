"""The one table of algorithms: README, CLI help and demo come from it, and no loop branches on a name."""

import ast
from pathlib import Path

import pytest

from lolkit.algorithms import TABLE, algo_help, demo_names, get_algorithm, markdown_table, names, train_names
from lolkit.errors import LolkitError

SRC = Path(__file__).resolve().parents[1] / "src" / "lolkit"
README = Path(__file__).resolve().parents[1] / "README.md"
LOOPS = ["train.py", "run.py", "online", "feedback", "cola"]


def test_readme_algorithm_table_is_the_table():
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_every_loop_row_is_trainable_from_the_cli_and_the_help_lists_it(cli):
    help_text = " ".join(cli("train", "--help").out.split())
    for name in train_names():
        assert name in help_text, name
    assert set(train_names()) == {a.name for a in TABLE if a.loop != "cola"}
    assert {a.loop for a in TABLE} == {"offline", "online", "feedback", "cola"}
    assert demo_names() == ("nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl",
                            "dpo", "pro")
    assert "quark" in algo_help() and names("online") == ["ppo", "nlpo", "a2c", "trpo"]


def test_cola_stages_are_rows_with_their_own_command(tmp_path, cli):
    assert get_algorithm("cola_rl").command == "lolkit cola rl"
    res = cli("train", "--algo", "cola_world", "--output-dir", tmp_path / "x", "--quiet")
    assert res.code == 2 and "lolkit cola world" in res.err and not (tmp_path / "x").exists()
    with pytest.raises(LolkitError, match="unknown algorithm 'sft'"):
        get_algorithm("sft")


def _name_comparisons(path: Path) -> list[str]:
    """`x == "quark"`, `name in ("alt_lmu", "alt_lmc")`, `algo != "selm"` …: comparisons with a row's name."""
    known = {a.name for a in TABLE}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            consts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            hits = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in known]
            found += [f"{path.relative_to(SRC)}:{node.lineno}: {h}" for h in hits]
    return found


def test_no_loop_branches_on_an_algorithm_name():
    files = [p for name in LOOPS for p in ([SRC / name] if name.endswith(".py") else sorted((SRC / name).rglob("*.py")))]
    assert len(files) > 8
    assert [hit for p in files for hit in _name_comparisons(p)] == []


def test_every_online_row_names_its_update():
    from lolkit.online.updates import UPDATES

    assert {a.name: a.update for a in TABLE if a.loop == "online"} == {"ppo": "ppo", "nlpo": "ppo", "a2c": "a2c",
                                                                          "trpo": "trpo"}
    assert all(a.update in UPDATES for a in TABLE if a.loop == "online")
    assert all(a.update is None for a in TABLE if a.loop != "online")
    assert [a.name for a in TABLE if not a.policy_lr] == ["trpo"]
