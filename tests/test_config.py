"""Config parsing: defaults, overrides, and one-line errors for unknown keys and bad values."""

from __future__ import annotations

import pytest

from medbalance.config import ConfigError, apply_overrides, dump_config, load_config, parse_config


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = parse_config({})
    assert cfg.task == "segmentation" and cfg.optimizer == "adam" and cfg.scheduler == "cosine"
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_unknown_top_level_key_suggests():
    with pytest.raises(ConfigError) as err:
        parse_config({"lr_rate": 0.1}, source="config.yaml")
    assert str(err.value) == "unknown key 'lr_rate' in config.yaml (did you mean 'lr'?)"


def test_unknown_nested_keys_name_their_section():
    with pytest.raises(ConfigError, match=r"unknown key 'n_trian' under 'data' in c.yaml \(did you mean 'n_train'\?\)"):
        parse_config({"data": {"kind": "intraclass_phantom", "n_trian": 3}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'base_channel' under 'model'.*did you mean 'base_channels'"):
        parse_config({"model": {"name": "unet", "base_channel": 8}})
    with pytest.raises(ConfigError, match=r"unknown model 'unett'.*did you mean 'unet'"):
        parse_config({"model": {"name": "unett"}})
    with pytest.raises(ConfigError, match=r"invalid value for 'data.kind'.*'phantom'"):
        parse_config({"data": {"kind": "phantom"}})


def test_wrong_types_and_ranges_are_one_line():
    with pytest.raises(ConfigError) as err:
        parse_config({"lr": "fast"}, source="c.yaml")
    assert "'lr'" in str(err.value) and "'fast'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="'epochs'"):
        parse_config({"epochs": 0})
    with pytest.raises(ConfigError, match="'data.size'"):
        parse_config({"data": {"kind": "nuclei_phantom", "size": 4}})
    with pytest.raises(ConfigError, match="invalid 'loss'"):
        parse_config({"loss": "dcie"})


def test_overrides_parse_yaml_scalars_and_nest():
    raw = apply_overrides(
        {"data": {"kind": "nuclei_phantom"}}, ["lr=1e-4", "data.size=64", "deterministic=false", "model.name=unet"]
    )
    cfg = parse_config(raw)
    assert cfg.lr == 1e-4 and cfg.data.size == 64 and cfg.deterministic is False
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        apply_overrides({"lr": 1.0}, ["lr.x=1"])


def test_yaml_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(unsafe)


def test_precision_int_is_accepted():
    assert parse_config({"precision": 32}).precision == "32"
    assert parse_config({"precision": "bf16-mixed"}).precision == "bf16-mixed"


def test_the_readme_config_is_valid():
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("## A config") :]
    block = block[block.index("```yaml") + len("```yaml") : block.index("```", block.index("```yaml") + 7)]
    cfg = parse_config(yaml.safe_load(block), source="README.md")
    assert cfg.augment.flip and cfg.channels_last == "auto" and cfg.model.name == "unet"
