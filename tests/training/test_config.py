"""Configuration: YAML/TOML files, command-line overrides, type and range checks, the saved copy."""

import argparse

import pytest
from icfrr_fast.training.config import (CONFIGS_DIR, Config, add_config_arguments, config_from_args, load_config,
                                       save_config)

YAML = """
model: {backbone: icfrr_vit_tiny}
data:
  benchmark: folders
  root: /data/x
  query_domain: sketch
  gallery_domain: photo
  sketch_domains: [sketch]
optim: {lr: 3.0e-4}
eval: {map_at: [100, 200]}
"""

TOML = """
[model]
backbone = "icfrr_vit_tiny"
[data]
benchmark = "folders"
root = "/data/x"
query_domain = "sketch"
gallery_domain = "photo"
sketch_domains = ["sketch"]
[optim]
lr = 3.0e-4
[eval]
map_at = [100, 200]
"""


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return p.parse_args(argv)


def test_yaml_and_toml_agree(tmp_path):
    (tmp_path / "c.yaml").write_text(YAML)
    (tmp_path / "c.toml").write_text(TOML)
    a = Config.from_dict(load_config(tmp_path / "c.yaml"))
    b = Config.from_dict(load_config(tmp_path / "c.toml"))
    assert a == b and a.optim.lr == 3e-4 and a.eval.map_at == [100, 200] and a.model.backbone == "icfrr_vit_tiny"
    assert a.optim.weight_decay == 5e-4 and a.optim.backbone_lr_mult == 0.1 and a.loss.margin == 0.2  # defaults


def test_flags_override_file(tmp_path):
    (tmp_path / "c.yaml").write_text(YAML)
    args = _parse(["--config", str(tmp_path / "c.yaml"), "--optim.lr", "1e-3", "--eval.precision_at", "5,10",
                   "--model.weights", "none", "--model.vitx", "true", "--train.max_steps", "7",
                   "--data.unseen_classes", "a,b"])
    cfg = config_from_args(args)
    assert cfg.optim.lr == 1e-3 and cfg.eval.precision_at == [5, 10] and cfg.model.weights is None
    assert cfg.model.vitx is True and cfg.train.max_steps == 7 and cfg.data.unseen_classes == ["a", "b"]
    assert cfg.data.root == "/data/x"  # from the file
    # a base (a checkpoint's configuration) under the file and the flags
    cfg = config_from_args(_parse(["--data.root", "/other"]), base=Config.from_dict(load_config(
        tmp_path / "c.yaml")).to_dict())
    assert cfg.data.root == "/other" and cfg.optim.lr == 3e-4


def test_saved_config_round_trips(tmp_path):
    (tmp_path / "c.yaml").write_text(YAML)
    cfg = Config.from_dict(load_config(tmp_path / "c.yaml"))
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert Config.from_dict(load_config(tmp_path / "out" / "config.yaml")) == cfg


@pytest.mark.parametrize("data,match", [
    ({"optimizer": {}}, "unknown config section 'optimizer'"),
    ({"optim": {"learning_rate": 1}}, r"unknown config key 'optim.learning_rate'; optim has: lr"),
    ({"optim": {"lr": "fast"}}, "optim.lr must be a number; got 'fast'"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be an int"),
    ({"model": {"vitx": "maybe"}}, "model.vitx must be a bool"),
    ({"optim": {"lr": 0}}, "optim.lr must be > 0"),
    ({"loss": {"mining": "semi_hard"}}, "loss.mining must be one of"),
    ({"train": {"amp": "fp8"}}, "train.amp must be one of"),
    ({"loss": {"semantic": 1.0}}, "loss.class_embeddings .* is required"),
    ({"loss": {"distill": 1.0}}, "needs model.vitx"),
    ({"data": {"root": "/x", "holdout_fraction": 1.0}}, "data.holdout_fraction must be in"),
    ({"data": {"benchmark": "folders"}}, "data.root is required"),
    ({"eval": {"map_at": [0]}}, "eval.map_at"),
])
def test_bad_values_name_the_key(data, match):
    if "data" not in data:
        data = {**data, "data": {"root": "/x"}}
    with pytest.raises(ValueError, match=match):
        Config.from_dict(data)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match="must be a .yaml/.yml or .toml"):
        load_config(tmp_path / "c.json")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(tmp_path / "bad.toml")


def test_shipped_configs_by_name(tmp_path, monkeypatch):
    # the package carries its configurations (they ship in the wheel); a bare name finds them from any folder
    assert {p.name for p in CONFIGS_DIR.glob("*.yaml")} >= {"smoke.yaml", "emoji.yaml"}
    monkeypatch.chdir(tmp_path)
    for name in ("smoke", "emoji"):
        want = load_config(CONFIGS_DIR / f"{name}.yaml")
        assert want and load_config(name) == want and load_config(f"{name}.yaml") == want
        Config.from_dict(want)
    with pytest.raises(FileNotFoundError, match=r"shipped configurations: .*smoke"):
        load_config("no_such_config")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "sub" / "smoke.yaml")  # a path with a folder is never replaced by a shipped file


def test_every_field_is_a_flag():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    flags = {a.dest for a in p._actions}
    for section, values in Config().to_dict().items():
        for name in values:
            assert f"{section}.{name}" in flags
    assert "distribution alignment" in p.format_help()  # field comments become help text
