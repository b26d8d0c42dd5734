import pytest

from lolkit.config import TrainConfig, build, dump_yaml, load_yaml, parse_overrides
from lolkit.errors import LolkitError


def test_layers_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\noptim:\n  lr: 0.01\nmodel:\n  lora: true\n  lora_target_modules: [q_proj, v_proj]\n")
    cfg = build(TrainConfig, load_yaml(f), parse_overrides(["optim.lr=5e-4", "data.max_prompt_len=32"]), {"seed": 7})
    assert cfg.seed == 7 and cfg.optim.lr == 5e-4 and cfg.model.lora is True
    assert cfg.model.lora_target_modules == ["q_proj", "v_proj"] and cfg.data.max_prompt_len == 32
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert build(TrainConfig, load_yaml(again)) == cfg


@pytest.mark.parametrize("layer, message", [
    ({"optim": {"lrr": 1}}, "unknown config key 'optim.lrr'"),
    ({"nope": 1}, "unknown config key 'nope'"),
    ({"seed": "abc"}, "config key 'seed': expected an integer"),
    ({"seed": 1.5}, "config key 'seed': expected an integer"),
    ({"model": {"lora": "maybe"}}, "config key 'model.lora': expected true/false"),
    ({"optim": 3}, "config key 'optim': expected a section"),
])
def test_bad_config_is_a_clear_error(layer, message):
    with pytest.raises(LolkitError, match=message.replace(".", r"\.")):
        build(TrainConfig, layer)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("seed: 1\noptim: [unclosed\n")
    with pytest.raises(LolkitError, match=r"bad.yaml:\d+: invalid YAML"):
        load_yaml(f)
    with pytest.raises(LolkitError, match="expected key=value"):
        parse_overrides(["optim.lr"])
