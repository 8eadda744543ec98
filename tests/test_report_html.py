"""report.html is self-contained and its plots render in a real browser (headless Chromium)."""
import re
import shutil
import subprocess

import pytest

from jerc_eval.report.html import render_html


@pytest.fixture(scope="module")
def first_run(checkpoints, tiny_npz, tmp_path_factory):
    import jerc_eval

    out = tmp_path_factory.mktemp("html")
    cfg = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])},
                                                          "dino": {"checkpoint": str(checkpoints["dino"])}},
               dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["gaussian_noise", "contrast"],
               severities=[1, 3, 5], out=str(out), workers=1, floors=False,
               probe_options={"c_steps": 2, "max_iter": 50})
    return jerc_eval.evaluate(**cfg), out


def test_html_is_self_contained_with_three_plots(first_run):
    res, out = first_run
    text = (out / "report.html").read_text()
    assert text.startswith("<!doctype html>")
    assert text == render_html(res)  # the file is exactly the rendering of the results (deterministic SVG ids)
    for pid in ("plot-accuracy", "plot-drop", "plot-heatmap"):
        block = text.split(f"id='{pid}'>", 1)[1].split("</div>", 1)[0]
        assert "<svg" in block and "</svg>" in block
    assert not re.search(r"(src|href)=['\"]https?://", text)  # nothing fetched from the network
    assert "<script" not in text


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (.ci/run installs Debian's chromium)")
def test_plots_render_in_headless_chromium(first_run, tmp_path):
    _, out = first_run
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    for pid in ("plot-accuracy", "plot-drop", "plot-heatmap"):
        assert re.search(rf'id="{pid}">\s*<svg', dom), f"{pid} missing from the rendered DOM"
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,2400", url], capture_output=True, timeout=120)
    from PIL import Image
    import numpy as np

    img = np.asarray(Image.open(shot).convert("L"))
    assert (img < 200).mean() > 0.02  # lines, bars and heatmap cells were drawn, not a blank page


def test_plots_drawn_in_a_forked_child_equal_the_serial_drawing(first_run, monkeypatch):
    import multiprocessing

    from jerc_eval.report.html import render_html

    results, _ = first_run
    forked = render_html(results)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # no fork: one process
    assert render_html(results) == forked


def test_full_tables_are_html_tables_and_an_unmodelled_recipe_has_no_spectra_section(first_run):
    import copy

    res, out = first_run
    text = (out / "report.html").read_text()
    tables = text.split("<h2>Full tables</h2>", 1)[1]
    assert "<pre>" not in text and "| encoder |" not in tables  # no raw Markdown
    assert tables.count("<table>") >= 3 and "<th>encoder</th>" in tables and "<h3>Summary</h3>" in tables
    assert "<strong>" in tables or "<code>" in tables
    assert text.count("class='plot'") >= 3
    bare = copy.deepcopy(res)
    for cells in (bare.get("alignment_evidence") or {}).get("cells", {}).values():
        for cell in cells.values():
            cell["encoders"] = {}  # no encoder's recipe could be modelled
    assert "plot-spectra" not in render_html(bare)
