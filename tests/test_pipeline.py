"""End to end on a tiny dataset: schema, determinism, caching, the paper's layout, atomic outputs."""
import json

import pytest

import jerc_eval
from jerc_eval.api import Reporter
from jerc_eval.cli import main


def _cfg(ckpt, npz, out, **kw):
    cfg = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(ckpt["mae"])},
                                                          "dino": {"checkpoint": str(ckpt["dino"])}},
               dataset="npz", dataset_options={"path": str(npz)}, corruptions=["gaussian_noise", "contrast"],
               severities=[1, 5], out=str(out), workers=1, probe_options={"c_steps": 2, "max_iter": 50})
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def first_run(checkpoints, tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("run1")
    return jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, out)), out


def test_results_schema(first_run):
    res, out = first_run
    doc = json.loads((out / "results.json").read_text())
    for key in ("schema", "schema_version", "config", "seeds", "environment", "dataset", "suite", "encoders",
                "rows", "summary", "comparison", "recommendation"):
        assert key in doc
    assert doc["schema"] == "jerc-eval/results" and doc["schema_version"] == 1
    assert len(doc["rows"]) == 2 * (1 + 2 * 2)
    row = doc["rows"][0]
    assert set(row) >= {"encoder", "dataset", "probe", "suite", "corruption", "severity", "n", "correct", "accuracy",
                        "ci95"}
    assert row["corruption"] == "clean" and row["n"] == 120
    enc = doc["encoders"]["mae"]
    assert enc["paradigm"] == "RC" and doc["encoders"]["dino"]["paradigm"] == "JE"
    assert len(enc["weights_sha256"]) == 64 and enc["feature_protocol"] == "cls-after-final-norm"
    assert enc["probe"]["train_accuracy"] > 0 and "C" in enc["probe"]
    assert enc["floor"]["accuracy"] >= 0
    assert doc["environment"]["packages"]["torch"]
    md = (out / "report.md").read_text()
    assert "| corruption | encoder | clean | S1 | S5 | Drop |" in md
    assert "gaussian_noise" in md and "Recommendation" in md
    assert (out / "report.html").read_text().startswith("<!doctype html>")


def test_drop_matches_rows(first_run):
    res, _ = first_run
    acc = {(r["encoder"], r["corruption"], r["severity"]): r["accuracy"] for r in res["rows"]}
    s1, s5 = acc[("dino", "contrast", 1)], acc[("dino", "contrast", 5)]
    got = res["summary"]["dino"]["corruptions"]["contrast"]["drop"]
    assert got == pytest.approx(100 * (s1 - s5) / s1)


def test_same_seed_same_results_and_cache(first_run, checkpoints, tiny_npz, tmp_path):
    res, _ = first_run
    again = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "b"))  # cached features
    fresh = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "c", no_cache=True, workers=2))
    assert again["rows"] == res["rows"] == fresh["rows"]
    assert again["summary"] == res["summary"]


def test_other_seed_changes_corruption_draws(first_run, checkpoints, tiny_npz, tmp_path):
    res, _ = first_run
    other = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "d", seed=1, floors=False))
    clean = lambda r: [x["correct"] for x in r["rows"] if x["corruption"] == "clean"]
    assert clean(other) == clean(res)
    assert other["config"]["seed"] == 1


def test_failing_reporter_leaves_no_partial_output(checkpoints, tiny_npz, tmp_path):
    from jerc_eval.pipeline import run
    from jerc_eval.config import from_mapping
    from jerc_eval.plugins import create_host

    class Boom(Reporter):
        name = "boom"
        filename = "boom.txt"

        def render(self, results):
            raise RuntimeError("renderer bug")

    host = create_host()
    host.registry("reporters").register(Boom, plugin="test")
    cfg = from_mapping(_cfg(checkpoints, tiny_npz, tmp_path / "o", reporters=["json", "markdown", "boom"],
                            floors=False))
    with pytest.raises(RuntimeError):
        run(cfg, host=host, echo=lambda m: None, progress=False)
    assert not (tmp_path / "o" / "results.json").exists()


def test_cli_run_with_yaml_config_and_flags(checkpoints, tiny_npz, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"encoders: [dino]\nencoder_options: {{dino: {{checkpoint: '{checkpoints['dino']}'}}}}\n"
                   f"dataset: npz\ndataset_options: {{path: '{tiny_npz}'}}\ncorruptions: [noise]\nseverities: [1, 3]\n"
                   f"seed: 5\nfloors: false\nworkers: 1\n")
    out = tmp_path / "o"
    code = main(["run", "--config", str(cfg), "-s", "2", "--out", str(out), "--quiet", "-p", "c_steps", "2"])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["suite"]["severities"] == [2]  # the flag won
    assert doc["config"]["seed"] == 5  # from the file
    assert list(doc["suite"]["corruptions"]) == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert "Drop" in capsys.readouterr().out


def test_fast_backend_records_backend_and_stays_close(first_run, checkpoints, tiny_npz, tmp_path):
    res, _ = first_run
    fast = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "f", backend="fast", floors=False))
    assert fast["suite"]["backend"] == "fast" and fast["suite"]["backend_version"].startswith("jerc-eval-fast")
    assert {r["backend"] for r in fast["rows"] if r["corruption"] != "clean"} == {"fast"}
    ref = {(r["encoder"], r["corruption"], r["severity"]): r["accuracy"] for r in res["rows"]}
    for r in fast["rows"]:  # contrast is deterministic: the fast backend reproduces the reference's accuracy
        if r["corruption"] == "contrast":
            assert r["accuracy"] == pytest.approx(ref[(r["encoder"], r["corruption"], r["severity"])], abs=0.02)


def test_matched_protocol_fits_a_probe_per_cell(first_run, checkpoints, tiny_npz, tmp_path):
    res, _ = first_run
    m = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "m", probe_fit_on="matched", floors=False,
                                  encoders=["dino"], encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}}))
    rows = [r for r in m["rows"] if r["corruption"] != "clean"]
    assert rows and all(r["probe_train_accuracy"] is not None for r in rows)
    assert m["config"]["probe_fit_on"] == "matched"
    clean_probe = {(r["corruption"], r["severity"]): r["correct"] for r in res["rows"] if r["encoder"] == "dino"}
    assert [r["correct"] for r in rows] != [clean_probe[(r["corruption"], r["severity"])] for r in rows]


@pytest.mark.parametrize("probe", ["knn", "sgd"])
def test_other_probes_run_end_to_end(checkpoints, tiny_npz, tmp_path, probe):
    opts = {"epochs": 5} if probe == "sgd" else {}
    res = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / probe, probe=probe, probe_options=opts,
                                    floors=False, severities=[1]))
    assert res["probe"]["name"] == probe and res["encoders"]["dino"]["probe"]["probe"] == probe


def test_corruption_warm_up_only_for_cells_left_to_compute(checkpoints, tiny_npz, tmp_path, monkeypatch):
    """The suite's warm-up (the reference glass blur's JIT compile) starts only for corruptions with a cell to
    compute: a rerun on cached features corrupts nothing and so warms nothing up."""
    from jerc_eval import engine

    calls = []
    real = engine.warm_up

    def recording(suite, corruptions):
        calls.append(list(corruptions))
        return real(suite, corruptions)

    monkeypatch.setattr(engine, "warm_up", recording)
    kw = dict(corruptions=["gaussian_noise", "glass_blur"], severities=[1], floors=False, alignment=False,
              cache_dir=str(tmp_path / "cache"))
    first = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "a", **kw))
    again = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "b", **kw))
    assert calls == [["gaussian_noise", "glass_blur"]]
    assert [r["correct"] for r in first["rows"]] == [r["correct"] for r in again["rows"]]


def test_console_keeps_whole_names_and_warns_below_the_floor():
    from jerc_eval.summary import console_table, vs_floor

    def enc_summary(acc, ci):
        return {"clean_accuracy": acc, "clean_ci95": ci, "mean_corrupted_accuracy": acc, "mean_drop": None,
                "mean_drop_se": None, "corruptions": {}}

    floor = {"accuracy": 0.79, "ci95": [0.77, 0.81]}
    assert vs_floor(enc_summary(0.56, [0.54, 0.58]), floor) == "below"
    assert vs_floor(enc_summary(0.80, [0.78, 0.82]), floor) == "indistinguishable"
    assert vs_floor(enc_summary(0.90, [0.88, 0.92]), floor) == "above" and vs_floor(enc_summary(0.5, [0, 1]), None) is None
    s = {"torchvision-resnet50-old": enc_summary(0.56, [0.54, 0.58]), "torchvision-resnet50-new": enc_summary(0.9, [0.88, 0.92])}
    for v in s.values():
        v["vs_floor"] = vs_floor(v, floor)
    res = {"summary": s, "encoders": {n: {"paradigm": "SL", "floor": floor} for n in s}, "comparison": None}
    text = console_table(res)
    assert "torchvision-resnet50-old" in text and "torchvision-resnet50-new" in text
    (warning,) = [line for line in text.splitlines() if line.startswith("warning:")]
    assert "torchvision-resnet50-old's clean accuracy 56.0 % is below its random-init floor 79.0 %" in warning


def test_encoder_aliases_let_one_adapter_appear_twice(checkpoints, tiny_npz, tmp_path):
    import torch

    from jerc_eval.config import encoder_aliases
    from jerc_eval.errors import UsageError
    from jerc_eval.models import VisionTransformer

    torch.manual_seed(1)
    other = tmp_path / "dino_other.pth"
    torch.save(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).state_dict(), other)
    res = jerc_eval.evaluate(encoders=["old=dino", "new=dino"],
                             encoder_options={"old": {"checkpoint": str(checkpoints["dino"])},
                                              "new": {"checkpoint": str(other)}},
                             dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["contrast"],
                             severities=[1], out=str(tmp_path / "o"), workers=1, no_cache=True, alignment=False,
                             floors=False, probe_options={"c_steps": 2, "max_iter": 30})
    assert sorted({r["encoder"] for r in res["rows"]}) == ["new", "old"]
    assert res["encoders"]["old"]["adapter"] == res["encoders"]["new"]["adapter"] == "dino"
    assert res["encoders"]["old"]["weights_sha256"] != res["encoders"]["new"]["weights_sha256"]
    assert "| old |" in (tmp_path / "o" / "report.md").read_text()
    assert encoder_aliases(["mae", "b=mae"]) == {"mae": "mae", "b": "mae"}
    with pytest.raises(UsageError, match="given twice"):
        encoder_aliases(["a=mae", "a=dino"])
    with pytest.raises(UsageError, match="ALIAS=NAME"):
        encoder_aliases(["a.b=mae"])


def test_evaluate_accepts_a_ready_module(checkpoints, tiny_npz, tmp_path):
    """A notebook's nn.Module, with its paradigm and preprocessing, beside a named encoder; cached by its weights."""
    import torch

    from jerc_eval.errors import UsageError

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    kw = dict(dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["contrast"], severities=[1, 5],
              workers=1, cache_dir=str(tmp_path / "cache"), alignment=False, probe_options={"c_steps": 2})
    res = jerc_eval.evaluate(modules={"mine": jerc_eval.ModuleEncoder(net, paradigm="JE", input_size=32)},
                             encoders=["mae"], encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])}},
                             out=str(tmp_path / "a"), **kw)
    assert list(res["encoders"]) == ["mae", "mine"] and res["encoders"]["mine"]["paradigm"] == "JE"
    assert res["encoders"]["mine"]["floor"] is not None and res["comparison"] is not None  # RC mae vs JE mine
    with torch.no_grad():
        net[0].weight.mul_(-1)  # other weights: never the cached features of the first
    again = jerc_eval.evaluate(modules={"mine": jerc_eval.ModuleEncoder(net, paradigm="JE", input_size=32)},
                               out=str(tmp_path / "b"), **kw)
    assert again["encoders"]["mine"]["fingerprint"] != res["encoders"]["mine"]["fingerprint"]
    with pytest.raises(UsageError, match="ModuleEncoder"):
        jerc_eval.evaluate(modules={"raw": net}, out=str(tmp_path / "c"), **kw)


def test_to_frame_gives_the_tidy_rows(checkpoints, tiny_npz, tmp_path):
    pd = pytest.importorskip("pandas")
    from jerc_eval.results import to_frame

    res = jerc_eval.evaluate(encoders=["rc=mae"], encoder_options={"rc": {"checkpoint": str(checkpoints["mae"])}},
                             dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["contrast"],
                             severities=[1, 5], out=str(tmp_path / "o"), workers=1, no_cache=True,
                             alignment=False, floors=False, probe_options={"c_steps": 2})
    df = to_frame(tmp_path / "o" / "results.json")
    assert isinstance(df, pd.DataFrame) and len(df) == len(res["rows"]) == 3
    assert set(df.columns) >= {"encoder", "paradigm", "corruption", "family", "severity", "accuracy", "ci95_low",
                               "ci95_high"}
    assert (df["encoder"] == "rc").all() and (df["paradigm"] == "RC").all() and (df["adapter"] == "mae").all()
    assert df.loc[df.severity == 5, "family"].item() == "digital"
    assert ((df.ci95_low <= df.accuracy) & (df.accuracy <= df.ci95_high)).all()


def test_quick_preset_runs_a_subset_and_says_so(checkpoints, tiny_npz, tmp_path):
    from jerc_eval.config import QUICK, RunConfig, apply_quick

    said: list[str] = []
    res = jerc_eval.evaluate(echo=said.append, quick=True, encoders=["mae"],
                             encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])}}, dataset="npz",
                             dataset_options={"path": str(tiny_npz)}, out=str(tmp_path / "o"), workers=1,
                             no_cache=True, alignment=False, floors=False, probe_options={"c_steps": 2})
    assert list(res["suite"]["corruptions"]) == QUICK["corruptions"] and res["suite"]["severities"] == [1, 3, 5]
    assert res["config"]["quick"] is True and any("--quick: a subset" in s for s in said)
    assert "Quick subset" in (tmp_path / "o" / "report.md").read_text()
    assert "id='quick'" in (tmp_path / "o" / "report.html").read_text()
    assert any("quick subset" in s for s in said)  # the console table too
    cfg = apply_quick(RunConfig(quick=True, corruptions=["fog"], severities=[2]))  # what the user set stays
    assert cfg.corruptions == ["fog"] and cfg.severities == [2] and cfg.dataset_options == QUICK["photodigits"]


def test_headline_says_one_encoder_per_paradigm_compares_checkpoints():
    from jerc_eval.recommend import empirical_recommendation
    from jerc_eval.summary import single_encoder_caveat

    comp = {"je_encoders": ["dino"], "rc_encoders": ["mae", "mae2"], "per_corruption": {"fog": {
        "less_degradation": "JE"}}, "overall": {"less_degradation": "JE", "je_drop": 1.0, "rc_drop": 9.0,
                                               "rc_minus_je": 8.0, "se": 1.0, "corruptions_used": ["fog"]},
        "counts": {"JE": 1, "RC": 0, "no clear winner": 0}}
    head = empirical_recommendation({"comparison": comp})["headline"]
    assert "JE has one encoder, so this compares these checkpoints, not the paradigms" in head
    comp["je_encoders"] = ["dino", "byol"]
    assert single_encoder_caveat(comp) == ""
