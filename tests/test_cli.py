"""`detect`: user help; user and environment errors end in one line and exit status 2."""

import errno
import re

import pytest

from detect.cli import COMMANDS, main
from detect.shipped_configs import shipped_config_names


def test_os_error_is_one_line_naming_the_file(monkeypatch, capsys):
    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.json")

    monkeypatch.setattr("detect.commands.score.run", full_disk)
    assert main(["score", "--gt", "x", "--detections", "y"]) == 2
    assert (
        capsys.readouterr().err == "detect score: error: /data/out.json: No space left on device\n"
    )


def test_output_folder_below_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "data"
    assert main(["synth", "--out", str(out), "--train", "1", "--val", "0", "--test", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect synth: error: ") and "a_file" in err
    assert len(err.strip().splitlines()) == 1


def test_help_is_user_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "Detect objects in images with SPP-net" in text
    for name, help_text in COMMANDS.items():  # every command with its one line
        assert re.search(rf"^\s+{name}\s+{re.escape(help_text.split()[0])}", text, re.M)
    assert "examples:\n  detect demo" in text
    assert "README" in text
    for developer_word in ("dispatch", "detect/", "detect.commands", ".py", "DetectError"):
        assert developer_word not in text


@pytest.mark.parametrize("command", ["train", "proposals", "bench", "demo"])
def test_config_option_names_the_shipped_configs(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--config YAML|NAME" in help_text
    assert f"shipped config's name ({', '.join(shipped_config_names())})" in help_text


def test_an_unknown_config_name_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "voc07", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect train: error: config voc07: file not found")
    assert "voc07_zf5" in err and len(err.strip().splitlines()) == 1
