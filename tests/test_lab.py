"""The pretraining lab (jerc_eval.zoo.lab): statistics on constructed inputs, the view hook, bad input through the
CLI, and a tiny end-to-end lab run twice (identical numbers for the same seed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jerc_eval import metrics
from jerc_eval.cli import main as cli_main
from jerc_eval.zoo import lab

TINY = ["-c", "gaussian_noise", "-s", "1,5", "-m", "mae,byol", "--seeds", "2", "--epochs", "1",
        "--train-subset", "64", "--probe-train", "100", "--test-subset", "60", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------- statistics
def test_cell_estimate_one_seed_is_binomial():
    e = lab.cell_estimate([0.3], 1000)
    assert e.value == 0.3
    assert e.se == pytest.approx(math.sqrt(0.3 * 0.7 / 1000))
    assert math.isinf(e.dof) and e.half95 == pytest.approx(metrics.Z95 * e.se)
    # per-image correctness of one seed gives the same variance
    correct = np.zeros((1, 1000), bool)
    correct[0, :300] = True
    assert lab.cell_estimate([0.3], 1000, correct).se == pytest.approx(e.se)


def test_cell_estimate_combines_seed_spread_and_test_set():
    accs = [0.30, 0.34, 0.32]
    e = lab.cell_estimate(accs, 2000)
    seed_var = np.var(accs, ddof=1) / 3
    assert e.se ** 2 == pytest.approx(seed_var + 0.32 * 0.68 / 2000)
    assert 2 < e.dof < math.inf                      # Welch-Satterthwaite between 2 (seeds) and inf (test set)
    assert e.half95 > metrics.Z95 * e.se             # a t quantile, wider than the normal one
    lo, hi = e.ci95
    assert lo < 0.32 < hi and hi - lo == pytest.approx(2 * e.half95)


def test_satterthwaite_single_seed_term():
    e = lab.Estimate(1.0, ((0.04, 2.0),))
    assert e.dof == pytest.approx(2.0)
    assert e.quantile == pytest.approx(4.302653, rel=1e-5)


def test_clearly_different_pair_is_significant():
    a, b = [0.50, 0.51, 0.52], [0.80, 0.81, 0.82]
    d = lab.difference(a, b, 2000)
    sig = lab.significance(d)
    assert d.value == pytest.approx(0.30)
    assert sig["significant"] and sig["p"] < 1e-3
    assert lab.verdict(d, sig, "b higher", "b lower", (3, 3)) == "b higher"
    d2 = lab.difference(b, a, 2000)
    assert lab.verdict(d2, lab.significance(d2), "b higher", "b lower", (3, 3)) == "b lower"


def test_equal_pairs_are_not_significant():
    a = [0.40, 0.43, 0.41]
    d = lab.difference(a, list(a), 2000)
    sig = lab.significance(d)
    assert d.value == 0 and sig["p"] == pytest.approx(1.0) and not sig["significant"]
    assert lab.verdict(d, sig, "x", "y", (3, 3)) == "not significant"
    # identical per-image correctness: the paired test-set term vanishes, still nothing to see
    c = np.random.default_rng(0).random((3, 500)) < 0.4
    d = lab.difference(a, list(a), 500, c, c.copy())
    assert d.parts[-1][0] == 0 and not lab.significance(d)["significant"]


def test_small_difference_within_noise_is_not_significant():
    d = lab.difference([0.30, 0.36, 0.33], [0.31, 0.37, 0.35], 2000)
    assert not lab.significance(d)["significant"]


def test_paired_term_uses_per_image_differences():
    rng = np.random.default_rng(1)
    ca = rng.random((2, 1000)) < 0.5
    cb = ca.copy()
    cb[:, :20] = True                                   # b fixes a few images, otherwise identical
    a, b = ca.mean(1).tolist(), cb.mean(1).tolist()
    paired = lab.difference(a, b, 1000, ca, cb)
    unpaired = lab.difference(a, b, 1000)
    assert paired.value == pytest.approx(unpaired.value)
    assert paired.parts[-1][0] < unpaired.parts[-1][0] / 10


def test_one_seed_gives_no_verdict():
    d = lab.difference([0.2], [0.6], 2000)
    assert lab.verdict(d, lab.significance(d), "x", "y", (1, 1)) == "n/a (1 seed)"


def test_bonferroni():
    d = lab.difference([0.50, 0.52, 0.51], [0.55, 0.56, 0.57], 2000)
    one, two = lab.significance(d), lab.significance(d, comparisons=2)
    assert two["p_adjusted"] == pytest.approx(min(1.0, 2 * one["p"]))


def test_drop_matches_the_pipeline_delta_method():
    n = 2000
    e1, e5 = lab.cell_estimate([0.6], n), lab.cell_estimate([0.45], n)
    d = lab.drop_estimate(e1, e5)
    assert d.value == pytest.approx(metrics.paper_drop(0.6, 0.45))
    assert d.se == pytest.approx(metrics.paper_drop_se(0.6, n, 0.45, n))
    assert lab.drop_estimate(lab.cell_estimate([0.0], n), e5) is None


def test_near_chance_rule():
    assert lab.near_chance(0.149, 0.1) and not lab.near_chance(0.151, 0.1)


def test_train_overrides():
    assert lab.train_overrides("mae", 60) == {"epochs": 60, "warmup_epochs": 4, "arch": "vit_zoo"}
    assert lab.train_overrides("mae", 2) == {"epochs": 2, "warmup_epochs": 1, "arch": "vit_zoo"}
    # the JE ResNets train in the architecture the zoo ships them in (and --init zoo weights were trained in)
    assert lab.train_overrides("byol", 1) == {"epochs": 1, "warmup_epochs": 0, "arch": "resnet_zoo_s2"}


# ------------------------------------------------------------------------------------------- hook and probe
def test_view_hook_injects_and_passes_through():
    import torch

    from jerc_eval.features import resize

    rng = np.random.default_rng(0)
    imgs = rng.integers(60, 200, size=(8, 64, 64, 3), dtype=np.uint8)
    x = resize(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255, 32)
    idx = torch.arange(8)
    off = lab.ViewHook(imgs, 32, "gaussian_noise", 3, inject_p=0.0)
    assert off.swap(x, idx, lab.HOOK_ONLY, torch.Generator().manual_seed(0)) is x
    on = lab.ViewHook(imgs, 32, "gaussian_noise", 3, inject_p=1.0)
    y1 = on.swap(x, idx, lab.HOOK_ONLY, torch.Generator().manual_seed(0))
    y2 = on.swap(x, idx, lab.HOOK_ONLY, torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2)                          # seeded by the trainer's generator
    assert y1.shape == x.shape and (y1 - x).abs().mean() > 0.01
    assert on.counts()["injected_fraction"] == 1.0 and on.counts()["hook_calls"] == 2
    r = lab.hooked_recipe({"views": [{"size": 32}, {"size": 32, "bg_swap_p": 0.3}]})
    assert [v["bg_swap_p"] for v in r["views"]] == [lab.HOOK_ONLY, 0.3]


def test_probe_predictions_match_the_zoo_probe():
    from types import SimpleNamespace

    import torch

    from jerc_eval.models import build
    from jerc_eval.zoo.probe import linear_probe

    rng = np.random.default_rng(0)
    tr = SimpleNamespace(images=rng.integers(0, 255, (80, 64, 64, 3), dtype=np.uint8), labels=np.arange(80) % 10)
    te = SimpleNamespace(images=rng.integers(0, 255, (40, 64, 64, 3), dtype=np.uint8), labels=np.arange(40) % 10)
    torch.manual_seed(0)
    enc = build("vit_zoo").eval()
    pred, _ = lab.probe_predictions(enc, tr.images, tr.labels, te.images)
    assert float((pred == te.labels).mean()) == linear_probe(enc, tr, te)


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args, code, needle", [
    (["-c", "gaussian_nosie"], 4, "Did you mean: gaussian_noise"),
    (["-s", "0,1"], 2, "outside 1-5"),
    (["-s", "1,6"], 2, "outside 1-5"),
    (["-m", "mea"], 4, "Did you mean: mae"),
    (["--inject-p", "1.5"], 2, "outside 0-1"),
    (["--seeds", "0"], 2, "--seeds"),
    (["--train-subset", "10"], 2, "one batch"),
])
def test_bad_input(tmp_path, capsys, args, code, needle):
    out = tmp_path / "out"
    assert cli_main(["lab", *args, "--out", str(out)]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    docs = []
    for k in range(2):
        out = tmp_path_factory.mktemp(f"lab{k}")
        assert cli_main(["lab", *TINY, "--out", str(out)]) == 0
        docs.append((json.loads((out / "lab.json").read_text()), (out / "lab.md").read_text()))
    return docs


def _numbers(doc):
    runs = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in doc["runs"]]
    floors = [{k: v for k, v in f.items() if not k.endswith("_seconds")} for f in doc["floors"]]
    return runs, floors, doc["summary"], doc["seeds"], doc["dataset"]["fingerprint"]


def test_lab_document(tiny_lab):
    doc, md = tiny_lab[0]
    assert doc["schema"] == lab.SCHEMA and doc["command"].startswith("jerc-eval lab")
    for key in ("config", "seeds", "environment", "dataset", "corruption_backends", "trainer", "probe", "runs",
                "floors", "summary", "timing", "statistics"):
        assert key in doc
    assert doc["environment"]["packages"]["torch"]
    assert len(doc["dataset"]["fingerprint"]["train"]) == 64
    # clean: 2 methods x 2 seeds; corrupted: 2 severities x 2 methods x 2 arms x 2 seeds
    assert len(doc["runs"]) == 4 + 16
    assert doc["trainer"]["equal_images_seen"] and doc["trainer"]["images_seen"] == 64
    assert all(r["images_seen"] == 64 for r in doc["runs"])
    inj = [r for r in doc["runs"] if r["inject"]]
    assert inj and all(r["views"]["hook_calls"] > 0 and 0 < r["views"]["injected_fraction"] < 1 for r in inj)
    s = doc["summary"]
    assert {d["method"] for d in s["drops"]} == {"mae", "byol"} and all("near_chance" in d for d in s["drops"])
    assert len(s["inject_effect"]) == 2 * 2 + 2          # per severity and method, plus one Drop row per method
    assert {r["best_je"] for r in s["je_vs_rc"]} == {"byol"} and len(s["je_vs_rc"]) == 1 + 2 * 2
    assert all(r["comparisons"] == 1 for r in s["je_vs_rc"])
    assert len(s["floors"]) == 3 * 2                    # clean + 2 severities, 2 architectures
    for c in s["cells"]:
        assert c["ci95"][0] <= c["mean"] <= c["ci95"][1]
    # the summary is a pure function of the recorded runs
    assert lab.summarize(json.loads(json.dumps(doc))) == s
    for needle in ("## gaussian_noise", "| MAE | RC | no |", "Drop ±95 %", "## Inject vs no inject", "## JE vs RC",
                   "false positives"):
        assert needle in md


def test_same_seed_same_numbers(tiny_lab):
    (a, _), (b, _) = tiny_lab
    assert _numbers(a) == _numbers(b)
    assert a["runs"][0]["correct_bits"] == b["runs"][0]["correct_bits"]


def test_background_swap_recipe_is_honoured(monkeypatch):
    """A recipe view with bg_swap_p goes through the lab's hook, and the swapped views are corrupted too."""
    import copy

    from jerc_eval.datasets import photodigits as pd
    from jerc_eval.zoo import pretrain

    if not (lab.trainer_hooks() and hasattr(pd, "build_layers") and hasattr(pd, "background_bank")):
        pytest.skip("the trainer has no layers=/recipe= hooks")
    recipes = copy.deepcopy(pretrain.RECIPES)
    recipes["mae"]["views"][0]["bg_swap_p"] = 0.5
    monkeypatch.setattr(pretrain, "RECIPES", recipes)
    monkeypatch.setattr(lab, "BG_BANK_SIZE", 16)
    cfg = lab.LabConfig(corruptions=["gaussian_noise"], severities=[1], methods=["mae"], seeds=1, epochs=1,
                        train_subset=64, probe_train=64, test_subset=20, inject_p=0.5, floors=False)
    doc = lab.run_lab(cfg)
    assert doc["trainer"]["bg_swap"] == {"mae": True}
    assert len(doc["runs"]) == 3
    for r in doc["runs"]:
        assert r["views"]["swapped_fraction"] > 0
        assert (r["views"]["injected_fraction"] > 0) == r["inject"]


def test_single_arm_single_seed_without_floors():
    """--inject-p 0 --no-floors --seeds 1 with one method: no inject rows, no JE-vs-RC, no test verdicts."""
    cfg = lab.LabConfig(corruptions=["contrast"], severities=[1, 5], methods=["mae"], seeds=1, epochs=1,
                        train_subset=64, probe_train=64, test_subset=30, inject_p=0.0, floors=False)
    doc = lab.run_lab(cfg)
    s = doc["summary"]
    assert len(doc["runs"]) == 3 and not any(r["inject"] for r in doc["runs"])
    assert doc["floors"] == [] and s["inject_effect"] == [] and s["je_vs_rc"] == []
    assert len(s["drops"]) == 1 and all(c["above_floor"] is None for c in s["cells"])
    md = lab.render_markdown(doc)
    assert "## contrast" in md and "## Inject" not in md and "## JE vs RC" not in md


def test_missing_zoo_checkpoint_is_a_checkpoint_error(monkeypatch, tmp_path):
    import jerc_eval.zoo as zoo
    from jerc_eval.errors import CheckpointError

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="--init random") as e:
        lab.zoo_init("byol")
    assert e.value.exit_code == 5
