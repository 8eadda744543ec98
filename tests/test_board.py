"""`jerc-eval compare`: one board across comparable runs, refused across incomparable ones, checked in Chromium."""
from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

import jerc_eval
from jerc_eval.cli import main


def _run(checkpoints, tiny_npz, out, encoder, corruptions=("gaussian_noise", "contrast")):
    return jerc_eval.evaluate(encoders=[encoder], encoder_options={encoder: {"checkpoint": str(checkpoints[encoder])}},
                              dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=list(corruptions),
                              severities=[1, 5], out=str(out), workers=1, no_cache=True, alignment=False,
                              floors=False, probe_options={"c_steps": 2})


def test_compare_board_text_csv_html(checkpoints, tiny_npz, tmp_path, capsys):
    a = _run(checkpoints, tiny_npz, tmp_path / "release-a", "mae")
    b = _run(checkpoints, tiny_npz, tmp_path / "release-b", "dino")
    board, table = tmp_path / "board.html", tmp_path / "board.csv"
    code = main(["compare", str(tmp_path / "release-a" / "results.json"), str(tmp_path / "release-b" / "results.json"),
                 "--html", str(board), "--csv", str(table)])
    out = capsys.readouterr().out
    assert code == 0 and "release-a" in out and "release-b" in out and "mean corrupted" in out
    rows = list(csv.DictReader(table.open()))
    assert sorted(r["encoder"] for r in rows) == ["dino", "mae"]
    means = [float(r["mean corrupted"]) for r in rows]
    assert means == sorted(means, reverse=True)  # best first
    assert {r["encoder"]: float(r["clean"]) for r in rows} == {
        "mae": a["summary"]["mae"]["clean_accuracy"], "dino": b["summary"]["dino"]["clean_accuracy"]}
    assert rows[0]["rank"] == "1" and rows[0]["mCE"] == ""  # mCE is not defined on 2 corruptions of a tiny set
    text = board.read_text()
    assert "<table id='board'>" in text and "<script" not in text and "http" not in text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:  # a real browser renders the board
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", board.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        assert 'id="board"' in dom and dom.count("<tr>") == 3


def test_compare_refuses_incomparable_runs(checkpoints, tiny_npz, tmp_path, capsys):
    _run(checkpoints, tiny_npz, tmp_path / "a", "mae")
    _run(checkpoints, tiny_npz, tmp_path / "b", "mae", corruptions=("fog",))
    assert main(["compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ in their corruptions" in err and not (tmp_path / "board.html").exists()
