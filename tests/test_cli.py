"""Bad input: one line naming the problem and the fix, a distinct exit code, no traceback, nothing written."""
import json
import subprocess
import sys

import numpy as np
import pytest

from jerc_eval.cli import main


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args, code, needle", [
    (["run", "-e", "maee"], 4, "Did you mean: mae"),
    (["run", "--dataset", "photodigit"], 4, "Did you mean: photodigits"),
    (["run", "-c", "gaussian_nosie"], 4, "Did you mean: gaussian_noise"),
    (["run", "-s", "1,7"], 2, "outside 1-5"),
    (["run", "-e", "mae", "-o", "checkpoint", "/nonexistent/mae.pth"], 5, "does not exist"),
    (["run", "-e", "mae"], 2, "needs option 'checkpoint'"),
    (["run", "-e", "zoo-mae", "-o", "pool", "max"], 2, "must be one of cls, avg, grid"),
    (["run", "-e", "zoo-mae", "-o", "num_heads", "three"], 2, "not a valid int"),
    (["run", "-e", "zoo-mae", "-o", "chekpoint", "x"], 2, "unknown option 'chekpoint'"),
    (["list", "encodrs"], 2, "unknown kind"),
    (["run", "--backend", "gpu"], 2, "no backend 'gpu'"),
])
def test_bad_input(tmp_path, capsys, args, code, needle):
    out_dir = tmp_path / "out"
    got, _, err = run_cli([*args, "--out", str(out_dir)] if args[0] == "run" else args, capsys)
    assert got == code
    assert needle in _one_line_error(err)
    assert not out_dir.exists()


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('encoders = ["zoo-mae"]\nseverity = [1]\n')
    got, _, err = run_cli(["run", "--config", str(cfg)], capsys)
    assert got == 2 and "Did you mean: severities" in _one_line_error(err)


def test_small_images_rejected(tmp_path, capsys, checkpoints):
    small = tmp_path / "small.npz"
    x = np.zeros((8, 16, 16, 3), np.uint8)
    np.savez(small, x_train=x, y_train=np.arange(8) % 2, x_test=x, y_test=np.arange(8) % 2)
    out_dir = tmp_path / "out"
    got, _, err = run_cli(["run", "-e", "dino", "-o", "checkpoint", str(checkpoints["dino"]), "--dataset", "npz",
                           "-d", "path", str(small), "--out", str(out_dir), "--quiet"], capsys)
    assert got == 6 and "below the 32 px" in _one_line_error(err)
    assert not out_dir.exists()


def test_truncated_checkpoint_exit_code(tmp_path, capsys, checkpoints, tiny_npz):
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(checkpoints["dino"].read_bytes()[:200])
    got, _, err = run_cli(["run", "-e", "dino", "-o", "checkpoint", str(bad), "--dataset", "npz", "-d", "path",
                           str(tiny_npz), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert got == 5 and "truncated" in _one_line_error(err)


def test_list_and_plugins(capsys):
    code, out, _ = run_cli(["list", "encoders"], capsys)
    assert code == 0 and "zoo-dino" in out
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0 and any(p["name"].endswith("encoders") for p in json.loads(out))
    code, out, _ = run_cli(["list", "corruptions"], capsys)  # in the README's tour; was exit 2 (cifar10-c's root)
    assert code == 0 and "imagenet-c  noise    gaussian_noise" in out and "cifar10-c  (" in out and "-S root" in out


def test_console_script_entry(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jerc_eval", "run", "-e", "nope", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith("error: unknown encoder 'nope'")


def test_theory_reproduce_fast(tmp_path, capsys):
    code, out, _ = run_cli(["theory", "reproduce", "--fast", "--out", str(tmp_path)], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "figure3.json").read_text())
    assert (tmp_path / "figure3.png").stat().st_size > 1000 and doc
