"""YAML config loading: defaults, overrides, unknown keys, round trip."""

from pathlib import Path

import pytest
import yaml

from detect.config import Config, config_to_dict, load_config, save_config
from detect.errors import DetectError
from detect.shipped_configs import SHIPPED_CONFIG_DIR


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


SHIPPED = sorted(SHIPPED_CONFIG_DIR.glob("*.yaml"))


def yaml_leaves(values: dict, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a YAML mapping, lists as tuples."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from yaml_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", tuple(value) if isinstance(value, list) else value


def config_value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_every_value_they_set(path):
    # Read independently with PyYAML: every value the file sets is the value the run gets.
    leaves = list(yaml_leaves(yaml.safe_load(path.read_text())))
    assert leaves, path
    cfg = load_config(path)
    for dotted, value in leaves:
        assert config_value(cfg, dotted) == value, dotted


def training_configs():
    """Every config a shipped file trains with, the demo's R-CNN overrides applied too."""
    for path in SHIPPED:
        cfg = load_config(path)
        yield path.name, cfg
        if cfg.demo.rcnn_overrides:
            yield f"{path.name} (R-CNN)", load_config(path, list(cfg.demo.rcnn_overrides))
    yield "defaults", load_config()


def test_training_uses_the_papers_sampling_and_svm_values():
    # Fast R-CNN sampling; R-CNN's SVMs and box regression (the values of the papers).
    for name, cfg in training_configs():
        finetune, svm, bbox_reg = cfg.finetune, cfg.svm, cfg.bbox_reg
        assert finetune.fg_iou == 0.5 and finetune.fg_fraction == 0.25, name
        assert (finetune.bg_iou_low, finetune.bg_iou_high) == (0.1, 0.5), name
        assert svm.neg_iou == 0.3, name
        assert (svm.hard_threshold, svm.easy_threshold) == (-1.0, -1.2), name
        assert (svm.C, svm.positive_weight, svm.intercept_scaling) == (0.001, 2.0, 10.0), name
        assert svm.feature_norm == 20.0 and bbox_reg.feature_norm == 20.0, name
        assert bbox_reg.min_iou == 0.6, name


@pytest.mark.parametrize("name", ["demo", "demo.yaml"])
def test_a_shipped_config_loads_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(name) == load_config(SHIPPED_CONFIG_DIR / "demo.yaml")


def test_a_folder_of_the_same_name_does_not_hide_a_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo").mkdir()  # e.g. made by `detect synth --out demo`
    assert load_config("demo") == load_config(SHIPPED_CONFIG_DIR / "demo.yaml")
    Path("other").mkdir()
    with pytest.raises(DetectError, match="^config other: is a folder, not a file$"):
        load_config("other")


def test_a_file_in_the_current_folder_wins_over_a_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo.yaml").write_text("seed: 7\n")
    assert load_config("demo.yaml").seed == 7


@pytest.mark.parametrize("value", ["nope", "elsewhere/demo.yaml", "demo.yml"])
def test_a_missing_config_names_the_value_and_the_shipped_configs(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DetectError) as error:
        load_config(value)
    message = str(error.value)
    assert message.startswith(f"config {value}: file not found")
    assert "demo" in message and "voc07_zf5" in message and "\n" not in message


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32])
def test_a_seed_the_random_generators_refuse_is_one_line(seed):
    """numpy's legacy seeding takes 0 .. 2**32 - 1 and derived seeds add offsets (+1000): a
    negative or too large seed stopped training with a traceback."""
    with pytest.raises(
        DetectError, match=rf"--set seed={seed}: seed must be in \[0, 2147483647\], got {seed}$"
    ):
        load_config("demo", [f"seed={seed}"])
    assert load_config("demo", [f"seed={2**31 - 1}"]).seed == 2**31 - 1
