"""YAML config loading: defaults, overrides, unknown keys, round trip."""

import pytest

from detect.config import Config, config_to_dict, load_config, save_config
from detect.errors import DetectError


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.model.pyramid_levels == (1, 2, 3, 6)
    assert cfg.model.scales == (688,)
    assert cfg.finetune.fg_fraction == 0.25 and cfg.finetune.rois_per_image_batch == 128
    assert cfg.svm.C == 0.001 and cfg.svm.positive_weight == 2.0
    assert cfg.test.nms_iou == 0.3


def test_yaml_overrides_and_cli_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model:\n  backbone: tiny\n  scales: [224, 320]\nseed: 3\n")
    cfg = load_config(path, ["finetune.lr=0.01", "model.fc_dims=[64, 64]"])
    assert cfg.model.backbone == "tiny" and cfg.model.scales == (224, 320)
    assert cfg.finetune.lr == 0.01 and cfg.model.fc_dims == (64, 64) and cfg.seed == 3


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  scalse: [600]\n")
    with pytest.raises(DetectError, match=r"bad.yaml.*scalse.*valid keys:.*scales"):
        load_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("finetune:\n  iterations: many\n")
    with pytest.raises(DetectError, match=r"finetune.iterations.*'many'"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(DetectError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(DetectError, match="broken.yaml"):
        load_config(bad)


def test_unreadable_config_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  scales: [600\n")
    with pytest.raises(DetectError) as info:
        load_config(bad)
    # One line, with the place of the problem (1-based, as editors count).
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"config {bad}: invalid YAML: ") and "line 3" in str(
        info.value
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(DetectError, match=r"binary.yaml: not a text file"):
        load_config(binary)
    with pytest.raises(DetectError, match=r"is a folder, not a file"):
        load_config(tmp_path)


def test_override_with_invalid_yaml_value():
    with pytest.raises(DetectError, match=r"override 'model.scales=\[600': invalid YAML value"):
        load_config(overrides=["model.scales=[600"])


def test_frozen(tmp_path):
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.seed = 2  # type: ignore[misc]


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(overrides=["model.backbone=tiny", "model.svd_ranks=[32, 16]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_to_dict(cfg)["model"]["svd_ranks"] == [32, 16]


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")):
        load_config(path)
