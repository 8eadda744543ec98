"""The bad-input matrix (issue 15): every kind of mistake gets its exit code and one line naming the problem and
the fix; nothing is written under --out and no temporary file is left behind.

Each row is (case id, command, expected exit code, a phrase the message must contain). Commands run in-process
through ``jerc_eval.cli.main`` on tiny .npz datasets (40 train / 20 test images, 32 px), one corruption at one
severity, without floors or alignment, so the whole file runs in seconds. Add a row for every new failure path.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jerc_eval.cli import main

FAST = ["-c", "gaussian_noise", "-s", "1", "--no-floors", "--no-alignment", "--quiet"]


def _npz(path: Path, **over) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(20) % 4}
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad input of the matrix, built once: {name: path}."""
    import torch
    from PIL import Image

    from jerc_eval.models import ResNet, VisionTransformer

    d = tmp_path_factory.mktemp("bad")
    f = {"good": _npz(d / "good.npz")}
    y40 = np.arange(40) % 4
    f["huge_label"] = _npz(d / "huge.npz", y_train=np.where(np.arange(40) == 0, 10 ** 6, y40))
    f["one_class"] = _npz(d / "one.npz", y_train=y40 * 0, y_test=np.zeros(20, np.int64))
    f["float_labels"] = _npz(d / "float.npz", y_train=y40 + 0.5)
    f["whole_float_labels"] = _npz(d / "wfloat.npz", y_train=y40.astype(np.float32))
    f["no_y_test"] = _npz(d / "noytest.npz", y_test=None)
    f["empty_test"] = _npz(d / "emptytest.npz", x_test=np.zeros((0, 32, 32, 3), np.uint8),
                           y_test=np.zeros(0, np.int64))
    f["size_mismatch"] = _npz(d / "mismatch.npz", y_train=y40[:39])
    f["onehot"] = _npz(d / "onehot.npz", y_train=np.eye(4, dtype=np.int64)[y40])
    f["negative"] = _npz(d / "negative.npz", y_test=np.arange(20) % 4 - 1)
    f["small_images"] = _npz(d / "small.npz", x_train=np.zeros((40, 16, 16, 3), np.uint8),
                             x_test=np.zeros((20, 16, 16, 3), np.uint8))
    np.save(d / "array.npy", np.zeros((4, 32, 32, 3), np.uint8))
    f["npy"] = d / "array.npy"
    (d / "trunc.npz").write_bytes(f["good"].read_bytes()[:3000])
    f["trunc_npz"] = d / "trunc.npz"
    # an image folder with one truncated PNG
    for split, n in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            (d / "imgs" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(d / "imgs" / split / c / f"{i}.png")
    bad_png = d / "imgs" / "train" / "b" / "1.png"
    bad_png.write_bytes(bad_png.read_bytes()[:60])
    f["imgs"], f["bad_png"] = d / "imgs", bad_png
    for root, splits in (("good_imgs", ("train", "test")), ("inc/gaussian_noise/1", ("",))):
        for split in splits:
            for c in ("a", "b"):
                (d / root / split / c).mkdir(parents=True)
                for i in range(4 if split == "train" else 2):
                    Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(d / root / split / c / f"{i}.png")
    f["good_imgs"], f["inc"] = d / "good_imgs", d / "inc"
    (d / "inc_empty").mkdir()
    f["inc_empty"] = d / "inc_empty"
    (d / "notrain").mkdir()
    f["notrain"] = d / "notrain"
    (d / "c10c_empty").mkdir()
    f["c10c_empty"] = d / "c10c_empty"
    # checkpoints
    torch.manual_seed(0)
    res = ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
    sd = res.state_dict()
    sd["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, d / "nan.pth")
    torch.save(res.state_dict(), d / "resnet.pth")
    torch.save(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2).state_dict(),
               d / "vit.pth")
    torch.save({"x": os.system}, d / "code.pth")
    (d / "ckptdir").mkdir()
    for name in ("nan", "resnet", "vit", "code", "ckptdir"):
        f[name] = d / (name if name == "ckptdir" else f"{name}.pth")
    (d / "plugin_raises.py").write_text("from jerc_eval.hookspecs import hookimpl\n\n@hookimpl\n"
                                        "def register_probes(register):\n    raise RuntimeError('boom')\n")
    f["plugin_raises"] = d / "plugin_raises.py"
    (d / "afile").write_text("x")
    f["afile"] = d / "afile"
    return f


def _expand(args: list[str], files: dict, out: Path) -> list[str]:
    """``{name}`` in a command becomes that file's path; ``{out}`` the run's output folder."""
    return [a.format(out=out, **{k: str(v) for k, v in files.items()}) for a in args]


NPZ = ["run", "-e", "zoo-byol", "--dataset", "npz", "-d", "path"]
MATRIX = [
    # ---- 6: data
    ("label-1e6", NPZ + ["{huge_label}"], 6, "labels are not 0..K-1"),
    ("single-class", NPZ + ["{one_class}"], 6, "single class"),
    ("float-labels", NPZ + ["{float_labels}"], 6, "must be integer class indices"),
    ("whole-float-labels", NPZ + ["{whole_float_labels}"], 6, "y.astype(numpy.int64)"),
    ("one-hot-labels", NPZ + ["{onehot}"], 6, "one class index per image"),
    ("negative-label", NPZ + ["{negative}"], 6, "has label -1, outside 0..3"),
    ("missing-array", NPZ + ["{no_y_test}"], 6, "has no array y_test"),
    ("empty-test", NPZ + ["{empty_test}"], 6, "test split is empty"),
    ("size-mismatch", NPZ + ["{size_mismatch}"], 6, "40 images but 39 labels"),
    ("npy-for-npz", NPZ + ["{npy}"], 6, "not an .npz archive"),
    ("truncated-npz", NPZ + ["{trunc_npz}"], 6, ".npz"),
    ("small-images", NPZ + ["{small_images}"], 6, "below the 32 px"),
    ("npz-missing", NPZ + ["/nonexistent/data.npz"], 6, "does not exist; check the path (-d path PATH)"),
    ("npz-folder", NPZ + ["{ckptdir}"], 6, "is a folder"),
    ("corrupt-image", ["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", "{imgs}"], 6,
     "1.png is corrupt or truncated"),
    ("root-missing", ["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", "/nonexistent"], 6,
     "-d root PATH"),
    ("root-no-train", ["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", "{notrain}"], 6,
     "no train/<class>/ folders"),
    ("suite-root-missing", NPZ + ["{good}", "--suite", "cifar10-c", "-S", "root", "/nonexistent"], 6, "-S root PATH"),
    ("suite-root-file", NPZ + ["{good}", "--suite", "cifar10-c", "-S", "root", "{afile}"], 6, "is a file, not a folder"),
    ("cifar10c-empty", NPZ + ["{good}", "--suite", "cifar10-c", "-S", "root", "{c10c_empty}"], 6,
     "no gaussian_noise.npy under"),
    ("imagenet-c-empty", ["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", "{good_imgs}", "--suite",
                          "imagenet-c-folder", "-S", "root", "{inc_empty}"], 6, "holds no corruption folders"),
    ("imagenet-c-missing-cell", ["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", "{good_imgs}",
                                 "--suite", "imagenet-c-folder", "-S", "root", "{inc}", "-c", "shot_noise"], 6,
     "shot_noise/1 is missing"),
    # ---- 2: usage
    ("device-cuda7", NPZ + ["{good}", "--device", "cuda:7"], 2, "cuda:7"),
    ("device-tpu", NPZ + ["{good}", "--device", "tpu"], 2, "is not a device"),
    ("test-size-negative", ["run", "-e", "zoo-byol", "-d", "test_size", "-5"], 2, "-d test_size N with N >= 1"),
    ("knn-k0", NPZ + ["{good}", "--probe", "knn", "-p", "k", "0"], 2, "-p k N with N >= 1"),
    ("knn-temperature", NPZ + ["{good}", "--probe", "knn", "-p", "temperature", "0"], 2, "-p temperature"),
    ("logreg-folds", NPZ + ["{good}", "-p", "folds", "1"], 2, "-p folds"),
    ("logreg-old-val-fraction", NPZ + ["{good}", "-p", "val_fraction", "0.1"], 2, "unknown option 'val_fraction'"),
    ("dataset-option-typo", NPZ + ["{good}", "-d", "pth", "x"], 2, "unknown option 'pth' for dataset 'npz' (-d pth)"),
    ("out-is-file", NPZ + ["{good}", "--out", "{afile}"], 2, "is a file, not a folder"),
    ("out-under-file", NPZ + ["{good}", "--out", "{afile}/results"], 2, "is a file, not a folder"),
    ("cache-dir-file", NPZ + ["{good}", "--cache-dir", "{afile}"], 2, "--cache-dir"),
    ("severity", NPZ + ["{good}", "-s", "1,7"], 2, "outside 1-5"),
    ("image-size-negative", NPZ + ["{good}", "-o", "image_size", "-5"], 2, "-o image_size N with N >= 0"),
    ("num-heads-not-dividing", ["run", "-e", "zoo-mae", "--dataset", "npz", "-d", "path", "{good}", "-o", "num_heads",
                                "5"], 2, "does not divide the ViT's width"),
    ("seed-negative", NPZ + ["{good}", "--seed", "-1"], 2, "--seed N with N >= 0"),
    ("alias-twice", NPZ + ["{good}", "-e", "a=zoo-byol", "-e", "a=zoo-dino"], 2, "is given twice"),
    ("alias-malformed", NPZ + ["{good}", "-e", "a.b=zoo-byol"], 2, "ALIAS=NAME"),
    ("cache-root-file", ["cache", "info", "--cache-dir", "{afile}"], 2, "is a file; pass a folder"),
    ("compare-missing", ["compare", "/nonexistent/results.json"], 2, "/nonexistent/results.json"),
    ("config-folder", ["run", "--config", "{ckptdir}"], 2, "is a folder"),
    ("theory-out-file", ["theory", "reproduce", "--fast", "--out", "{afile}"], 2, "is a file, not a folder"),
    # ---- 4: unknown names
    ("encoder-typo", ["run", "-e", "maee"], 4, "Did you mean: mae"),
    ("probe-typo", NPZ + ["{good}", "--probe", "knnn"], 4, "Did you mean: knn"),
    ("corruption-typo", NPZ + ["{good}", "-c", "gaussian_nosie"], 4, "Did you mean: gaussian_noise"),
    # ---- 5: checkpoints
    ("nan-weights", ["run", "-e", "byol", "-o", "checkpoint", "{nan}", "--dataset", "npz", "-d", "path", "{good}"],
     5, "layer2.0.conv1.weight holds 1 NaN"),
    ("checkpoint-missing", ["run", "-e", "byol", "-o", "checkpoint", "/nonexistent.pth"], 5, "does not exist"),
    ("checkpoint-folder", ["run", "-e", "byol", "-o", "checkpoint", "{ckptdir}"], 5, "is a folder"),
    ("wrong-architecture", ["run", "-e", "byol", "-o", "checkpoint", "{vit}", "--dataset", "npz", "-d", "path",
                            "{good}"], 5, "-e byol cannot load vit.pth"),
    ("pickle-needs-code", ["run", "-e", "dino", "-o", "checkpoint", "{code}", "--dataset", "npz", "-d", "path",
                           "{good}"], 5, "needs code to load"),
    ("inspect-folder", ["inspect-checkpoint", "{ckptdir}"], 5, "is a folder"),
    ("inspect-text-file", ["inspect-checkpoint", "{plugin_raises}"], 5, "not a torch file"),
    ("checkpoint-not-a-pickle", ["run", "-e", "dino", "-o", "checkpoint", "{plugin_raises}", "--dataset", "npz",
                                 "-d", "path", "{good}"], 5, "not a torch file"),
    # ---- 7: plugins
    ("plugin-hook-raises", ["--plugin", "{plugin_raises}", "run", "-e", "zoo-byol"], 7,
     "raised in register_probes (RuntimeError: boom)"),
    ("plugin-hook-raises-strict", ["--strict-plugins", "run", "--plugin", "{plugin_raises}", "-e", "zoo-byol"], 7,
     "plugin_raises.py"),
    ("plugin-missing", ["run", "--plugin", "/nonexistent.py", "-e", "zoo-byol"], 7, "does not exist"),
    ("plugin-folder", ["run", "--plugin", "{ckptdir}", "-e", "zoo-byol"], 7, "is a folder"),
    # ---- 2: gate inputs
    ("gate-folder", ["gate", "{ckptdir}", "--baseline", "{ckptdir}"], 2, "is a folder"),
]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _no_tmp(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("case, args, code, phrase", MATRIX, ids=[row[0] for row in MATRIX])
def test_bad_input_matrix(case, args, code, phrase, files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _expand(args, files, out)
    if "run" in argv[:4]:  # the fast settings, where the row does not set them itself
        for flag, value in (("-c", "gaussian_noise"), ("-s", "1"), ("--out", str(out))):
            argv += [flag, value] if flag not in argv else []
        argv += ["--no-floors", "--no-alignment", "--quiet"]
    got = main(argv)
    _, err = capsys.readouterr()
    line = _one_line(err)
    assert got == code, (case, line)
    assert phrase in line, (case, line)
    assert not out.exists(), f"{case}: something was written under --out"
    assert not _no_tmp(tmp_path) and not _no_tmp(files["good"].parent)


@pytest.fixture(scope="module")
def results(files, tmp_path_factory):
    """One real tiny run whose test split has a class train lacks: it warns, computes, and writes results."""
    d = tmp_path_factory.mktemp("run")
    data = _npz(d / "unseen.npz", y_train=np.arange(40) % 3, y_test=np.arange(20) % 4)
    out = d / "out"
    return data, out, main(NPZ[:-1] + ["path", str(data), *FAST, "--out", str(out)])


def test_unseen_test_class_warns_and_still_scores(results, capsys):
    _, out, code = results
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    (warning,) = doc["dataset"]["provenance"]["warnings"]
    assert "test class(es) '3' have no train images" in warning and "5 test image(s)" in warning
    clean = next(r for r in doc["rows"] if r["corruption"] == "clean")
    assert clean["n"] == 20  # every test image is scored, the unseen class's included


@pytest.mark.parametrize("edit, phrase", [
    (lambda d: [r.update(accuracy="high") for r in d["rows"]], "has accuracy 'high', not a number"),
    (lambda d: d["rows"][0].update(n="many"), "has n 'many', not a count"),
    (lambda d: d.update(summary={k: "oops" for k in d["summary"]}), "malformed summary"),
    (lambda d: [s.update(clean_accuracy="x") for s in d["summary"].values()], "clean_accuracy is 'x'"),
], ids=["rows-text", "rows-count", "summary-not-table", "summary-text"])
@pytest.mark.parametrize("flag", ["--baseline", "--policy"])
def test_gate_on_damaged_results_is_a_usage_error(results, tmp_path, capsys, edit, phrase, flag):
    _, out, _ = results
    doc = json.loads((out / "results.json").read_text())
    edit(doc)
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(doc))
    policy = tmp_path / "gate.toml"
    policy.write_text("min_clean_accuracy = 0.0\n")
    other = str(out / "results.json") if flag == "--baseline" else str(policy)
    code = main(["gate", str(bad), flag, other, "--summary", str(tmp_path / "s.md")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and phrase in line
    assert not (tmp_path / "s.md").exists()


def test_full_disk_is_one_line_and_leaves_no_temporary_file(files, tmp_path, capsys, monkeypatch):
    import jerc_eval.results as results_mod

    real = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, _text):
            raise OSError(errno.ENOSPC, "No space left on device")

    class OsFull:  # the results module's os, whose fdopen gives files that cannot be written
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fdopen(fd, *a, **k):
            return Full(real(fd, *a, **k))

    monkeypatch.setattr(results_mod, "os", OsFull())
    out = tmp_path / "out"
    code = main(NPZ + [str(files["good"]), *FAST, "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"no space left on the device of {str(out)!r}" in line
    assert not _no_tmp(tmp_path) and not any(p.is_file() for p in out.rglob("*"))


def test_full_disk_in_the_feature_cache_leaves_no_temporary_file(files, tmp_path, capsys, monkeypatch):
    import jerc_eval.cache as cache_mod

    def full(fh, blob):
        fh.write(blob[:10])  # the disk fills up part way through the entry
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_all", full)
    cache = tmp_path / "cache"
    code = main(NPZ + [str(files["good"]), *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(cache)])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: no space left on the device")
    assert not _no_tmp(tmp_path) and not (tmp_path / "out").exists()


def test_debug_prints_the_traceback_and_keeps_the_exit_code(capsys):
    assert main(["--debug", "run", "-e", "maee"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unknown encoder 'maee'")
    assert main(["run", "-e", "maee", "--debug"]) == 4  # global flags after the subcommand too
    assert "Traceback" in capsys.readouterr().err
    assert main(["list", "encoders", "--strict-plugins"]) == 0
    assert main(["list", "corruptions"]) == 0  # cifar10-c needs -S root to run, not to be listed
    assert "cifar10-c" in capsys.readouterr().out


def _env():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    return env


def test_closed_stdout_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "jerc_eval", "plugins"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # the reader is gone before anything is written (`jerc-eval plugins | head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_sigterm_prints_one_line_like_sigint(tmp_path):
    data = _npz(tmp_path / "big.npz", x_train=np.zeros((400, 32, 32, 3), np.uint8), y_train=np.arange(400) % 4,
                x_test=np.zeros((400, 32, 32, 3), np.uint8), y_test=np.arange(400) % 4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jerc_eval", "run", "-e", "zoo-byol", "--dataset", "npz", "-d", "path", str(data),
           "-c", "noise,blur", "--no-floors", "--no-alignment", "--no-cache", "--quiet", "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    assert proc.stdout.readline().startswith("jerc-eval:")  # loaded: the clean and corrupted stages follow
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, workers included, as a CI runner's cancel does
    _, err = proc.communicate(timeout=120)  # ~1 s here; the waits in the main thread are polled
    assert proc.returncode == 143
    assert err.strip() == "error: terminated (SIGTERM); nothing was written", err
    assert not out.exists()


def test_imagefolder_test_class_without_train_images_is_warned_about_and_scored(tmp_path, capsys):
    from PIL import Image

    for split, classes in (("train", ("a", "b")), ("test", ("a", "b", "c"))):
        for k, c in enumerate(classes):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(6 if split == "train" else 2):
                Image.fromarray(np.full((32, 32, 3), 60 * k + 5 * i, np.uint8)).save(tmp_path / "imgs" / split / c /
                                                                                    f"{i}.png")
    out = tmp_path / "out"
    code = main(["run", "-e", "zoo-byol", "--dataset", "imagefolder", "-d", "root", str(tmp_path / "imgs"), *FAST,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: imagefolder: test class(es) 'c' have no train images, so their 2 test image(s)" in err
    doc = json.loads((out / "results.json").read_text())
    assert next(r for r in doc["rows"] if r["corruption"] == "clean")["n"] == 6
