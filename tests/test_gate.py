"""The release gate: policy parsing, checks, exit codes, JUnit/markdown, baselines, and the pytest plugin."""
import io
import json
import xml.etree.ElementTree as ET

import pytest

from jerc_eval import metrics as m
from jerc_eval import summary as summ
from jerc_eval.errors import UsageError
from jerc_eval.gate import (Policy, ResultsLookupError, ResultsView, evaluate_gate, gate_main, load_policy,
                            policy_from_mapping, to_junit_xml, to_markdown)

pytest_plugins = ["pytester"]

COMMON = list(m.mce_corruptions())
FAMILY = {c: f for f, cs in m.imagenet_c_table()["families"].items() for c in cs}


def make_results(accs=None, clean=None, corruptions=("gaussian_noise", "fog"), severities=(1, 3, 5), n=1000,
                 fingerprint="fp-1", dataset="tinynet", suite="imagenet-c"):
    """A small results document. ``accs(encoder, corruption, severity) -> accuracy``; clean: {encoder: acc}."""
    clean = clean or {"dino": 0.80, "mae": 0.78}
    accs = accs or (lambda e, c, s: clean[e] - 0.04 * s)
    rows = []

    def row(enc, corr, sev, acc):
        correct = round(acc * n)
        return {"encoder": enc, "dataset": dataset, "probe": "logreg", "suite": suite, "backend": "reference",
                "corruption": corr, "family": "clean" if corr == "clean" else FAMILY[corr], "severity": sev,
                "n": n, "correct": correct, "accuracy": correct / n, "ci95": list(m.wilson_interval(correct, n))}

    for enc in clean:
        rows.append(row(enc, "clean", 0, clean[enc]))
        rows += [row(enc, c, s, accs(enc, c, s)) for c in corruptions for s in severities]
    return {"schema": "jerc-eval/results", "schema_version": 1,
            "dataset": {"name": dataset, "fingerprint": fingerprint, "num_classes": 10},
            "suite": {"name": suite, "backend": "reference", "corruptions": {c: FAMILY[c] for c in corruptions},
                      "severities": list(severities)},
            "probe": {"name": "logreg"}, "encoders": {e: {"paradigm": "JE"} for e in clean}, "rows": rows,
            "summary": {e: summ.encoder_summary(rows, e, 10) for e in clean}}


def write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


def write_policy(tmp_path, text, name="gate.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ------------------------------------------------------------------------------------------ policy
def test_load_policy_reads_every_key(tmp_path):
    p = load_policy(write_policy(tmp_path, """
min_clean_accuracy = 0.7
max_drop = 25
max_mce = 80.5
max_regression = 1.0
encoders = ["dino"]
[max_drop_per_corruption]
gaussian_noise = 30
[max_family_drop]
noise = 28
"""))
    assert p == Policy(min_clean_accuracy=0.7, max_drop=25.0, max_mce=80.5, max_regression=1.0, encoders=["dino"],
                       max_drop_per_corruption={"gaussian_noise": 30.0}, max_family_drop={"noise": 28.0},
                       source=p.source)


@pytest.mark.parametrize("text, needle", [
    ("max_drops = 3\n", "Did you mean: max_drop?"),
    ("min_clean_acc = 0.5\n", "Did you mean: min_clean_accuracy?"),
    ("max_drop = 'high'\n", "should be a number"),
    ("max_drop = -1\n", "should not be negative"),
    ("min_clean_accuracy = 75\n", "write 0.75"),
    ("max_family_drop = 3\n", "table"),
    ("max_drop = [\n", "does not parse"),
])
def test_bad_policy_is_a_usage_error(tmp_path, text, needle):
    with pytest.raises(UsageError, match=None) as info:
        load_policy(write_policy(tmp_path, text))
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_overrides_win_and_tables_merge():
    base = policy_from_mapping({"max_drop": 10, "max_drop_per_corruption": {"fog": 5}})
    p = policy_from_mapping({"max_drop": 20, "max_drop_per_corruption": {"gaussian_noise": 7}}, base=base)
    assert p.max_drop == 20 and p.max_drop_per_corruption == {"fog": 5, "gaussian_noise": 7}


# ------------------------------------------------------------------------------------------ gate_main
def test_gate_passes_and_writes_reports(tmp_path, capsys):
    res = write(tmp_path / "results.json", make_results())
    pol = write_policy(tmp_path, "min_clean_accuracy = 0.7\nmax_drop = 40\n[max_family_drop]\nnoise = 40\n")
    junit, md = tmp_path / "out" / "gate.xml", tmp_path / "out" / "gate.md"
    assert gate_main(res, policy_path=pol, junit_path=junit, summary_path=md) == 0
    out = capsys.readouterr().out
    assert "gate passed: 6 of 6 checks passed" in out and "min_clean_accuracy" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert "release gate: ✅ passed" in md.read_text()
    assert sorted(p.name for p in junit.parent.iterdir()) == ["gate.md", "gate.xml"]  # no temp files left


def test_gate_fails_with_exit_1_and_junit_failures(tmp_path, capsys):
    # dino: Drop 100*(0.76-0.60)/0.76 = 21.1 %; mae: 21.6 %
    res = write(tmp_path / "results.json", make_results())
    pol = write_policy(tmp_path, "min_clean_accuracy = 0.79\n[max_drop_per_corruption]\nfog = 21.3\n")
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    assert gate_main(res, policy_path=pol, junit_path=junit, summary_path=md) == 1
    out = capsys.readouterr().out
    assert "gate FAILED: 2 of 4 checks passed" in out
    root = ET.fromstring(junit.read_text())
    cases = root.findall("./testsuite/testcase")
    failed = {(c.get("classname"), c.get("name")): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failed) == {("jerc_eval.gate.mae", "min_clean_accuracy[clean]"),
                           ("jerc_eval.gate.mae", "max_drop_per_corruption[fog]")}
    assert "21.6" in failed[("jerc_eval.gate.mae", "max_drop_per_corruption[fog]")].get("message")
    assert len(root.findall("testsuite")) == 1
    assert "❌ failed" in md.read_text() and "| mae | min_clean_accuracy | clean |" in md.read_text()


def test_overrides_through_gate_main(tmp_path, capsys):
    res = write(tmp_path / "results.json", make_results())
    pol = write_policy(tmp_path, "min_clean_accuracy = 0.79\n")
    assert gate_main(res, policy_path=pol, overrides={"min_clean_accuracy": 0.5}) == 0
    assert gate_main(res, overrides={"max_drop": 1.0}) == 1


@pytest.mark.parametrize("make_input, needle", [
    (lambda d: str(d / "nope.json"), "does not exist"),
    (lambda d: write(d / "x.json", {"rows": []}), "not a jerc-eval results document"),
    (lambda d: write(d / "x.json", {"schema": "other/thing", "rows": []}), "not a jerc-eval results document"),
    (lambda d: write(d / "x.json", dict(make_results(), schema_version=9)), "schema version 9"),
    (lambda d: (d / "x.json").write_text("{oops") and str(d / "x.json"), "not readable JSON"),
])
def test_bad_results_file_is_a_one_line_usage_error(tmp_path, make_input, needle):
    with pytest.raises(UsageError) as info:
        gate_main(make_input(tmp_path), overrides={"max_drop": 10})
    assert needle in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_usage_errors(tmp_path):
    res = write(tmp_path / "results.json", make_results())
    cases = [
        (dict(policy_path=str(tmp_path / "missing.toml")), "does not exist"),
        (dict(), "nothing to gate"),
        (dict(overrides={"max_regression": 1}), "needs a baseline"),
        (dict(overrides={"encoders": ["dinoo"], "max_drop": 5}), "Did you mean: dino?"),
        (dict(overrides={"max_drop_per_corruption": {"gausian_noise": 5}}), "Did you mean: gaussian_noise?"),
        (dict(overrides={"max_family_drop": {"noize": 5}}), "Did you mean: noise?"),
        (dict(overrides={"max_mce": 80}), "all 15 common ImageNet-C corruptions"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(UsageError, match=needle.replace("?", r"\?")):
            gate_main(res, **kwargs)


def test_known_but_unevaluated_corruption_fails_the_check():
    report = evaluate_gate(make_results(), Policy(max_drop_per_corruption={"snow": 50}, encoders=["dino"]))
    (check,) = report.checks
    assert not check.passed and check.measured is None and "not evaluated" in check.message


def test_encoders_key_limits_the_gate():
    report = evaluate_gate(make_results(), Policy(min_clean_accuracy=0.79, encoders=["dino"]))
    assert [c.encoder for c in report.checks] == ["dino"] and report.passed


# ------------------------------------------------------------------------------------------ baselines
def test_regression_beyond_ci_fails_within_ci_passes(tmp_path, capsys):
    base = write(tmp_path / "base.json", make_results(clean={"dino": 0.80}))
    within = write(tmp_path / "within.json", make_results(clean={"dino": 0.79}))   # -1 pt, CI ~ +-3.5 pts
    beyond = write(tmp_path / "beyond.json", make_results(clean={"dino": 0.70}))   # -10 pts
    pol = write_policy(tmp_path, "max_regression = 1.0\n")
    assert gate_main(within, baseline_path=base, policy_path=pol) == 0
    junit = tmp_path / "gate.xml"
    assert gate_main(beyond, baseline_path=base, policy_path=pol, junit_path=junit) == 1
    out = capsys.readouterr().out
    assert "max_regression" in out and "beyond" in out
    fails = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert len(fails) == 7 and fails[0].get("name") == "max_regression[clean]"  # clean + 2 corruptions x 3 sev
    # no policy at all: a baseline alone gates with max_regression = 0
    assert gate_main(within, baseline_path=base) == 0
    assert gate_main(beyond, baseline_path=base) == 1


def test_regression_check_values():
    base, cur = make_results(clean={"dino": 0.80}), make_results(clean={"dino": 0.70})
    report = evaluate_gate(cur, Policy(max_regression=2.0), base)
    check = next(c for c in report.checks if c.target == "clean")
    lo_a, hi_a = m.wilson_interval(700, 1000)
    lo_b, hi_b = m.wilson_interval(800, 1000)
    margin = 100 * ((((hi_a - lo_a) / 2) ** 2 + ((hi_b - lo_b) / 2) ** 2) ** 0.5)
    assert check.measured == pytest.approx(10.0 - margin) and check.unit == "pts" and not check.passed
    assert {c.target for c in report.checks} == {"clean", *(f"{c}@{s}" for c in ("fog", "gaussian_noise")
                                                           for s in (1, 3, 5))}


def test_baseline_on_another_dataset_is_refused(tmp_path):
    res = write(tmp_path / "r.json", make_results())
    base = write(tmp_path / "b.json", make_results(fingerprint="fp-2"))
    with pytest.raises(UsageError, match="different dataset"):
        gate_main(res, baseline_path=base, overrides={"max_regression": 1})


def test_baseline_without_the_encoder(tmp_path):
    with pytest.raises(UsageError, match="baseline has no encoder 'mae'"):
        evaluate_gate(make_results(), Policy(max_regression=1), make_results(clean={"dino": 0.8}))


# ------------------------------------------------------------------------------------------ mCE gate
def _full(scale, clean=None):
    alex = m.alexnet_errors()
    return make_results(accs=lambda e, c, s: 1 - scale * alex[c][s], clean=clean or {"dino": 0.75},
                        corruptions=COMMON, severities=(1, 2, 3, 4, 5), n=2000)


def test_max_mce_against_alexnet_and_baseline():
    doc = _full(0.6)  # errors 60 % of AlexNet's -> mCE ~ 60 (rounded to counts of 2000)
    report = evaluate_gate(doc, Policy(max_mce=61))
    (check,) = report.checks
    assert check.passed and check.measured == pytest.approx(60.0, abs=0.1) and check.target == "vs AlexNet"
    assert "unnormalized mCE" in check.message and "relative mCE" in check.message
    assert any("only meaningful on ImageNet-C" in w for w in report.warnings)  # dataset 'tinynet'
    assert not evaluate_gate(doc, Policy(max_mce=59)).passed
    # against a baseline document: 0.6 / 0.8 of its errors -> 75
    report = evaluate_gate(doc, Policy(max_mce=76), _full(0.8))
    assert report.checks[0].target == "vs baseline" and report.checks[0].measured == pytest.approx(75, abs=0.2)
    assert report.passed and not evaluate_gate(doc, Policy(max_mce=74), _full(0.8)).passed


def test_max_mce_with_a_missing_corruption_is_refused():
    doc = _full(0.6)
    doc["rows"] = [r for r in doc["rows"] if r["corruption"] != "frost"]
    with pytest.raises(UsageError, match="frost"):
        evaluate_gate(doc, Policy(max_mce=80))


# ------------------------------------------------------------------------------------------ accessors
def test_results_view_accessors():
    r = ResultsView(make_results())
    assert r.encoders == ["dino", "mae"] and r["schema"] == "jerc-eval/results"
    assert r.accuracy("dino") == 0.8
    assert r.accuracy("dino", "fog", 5) == pytest.approx(0.6)
    assert r.accuracy("dino", "fog") == pytest.approx(0.68)
    assert r.drop("dino", "fog") == pytest.approx(100 * 0.16 / 0.76)
    assert r.family_drop("dino", "weather") == pytest.approx(r.drop("dino", "fog"))
    lo, hi = r.ci95("dino", "fog", 1)
    assert lo < 0.76 < hi
    with pytest.raises(ResultsLookupError, match="Did you mean: dino"):
        r.accuracy("dinoo")
    with pytest.raises(KeyError, match="Did you mean: fog"):
        r.accuracy("dino", "fogg", 1)
    with pytest.raises(KeyError, match="severity"):
        r.accuracy("dino", "fog", 2)


def test_junit_escapes_odd_names():
    doc = make_results(clean={'a<b>&"c\x01': 0.9})
    xml = to_junit_xml(evaluate_gate(doc, Policy(min_clean_accuracy=0.95)))
    case = ET.fromstring(xml).find("./testsuite/testcase")
    assert case.get("classname") == 'jerc_eval.gate.a<b>&"c?'  # control characters are not valid XML
    md = to_markdown(evaluate_gate(make_results(clean={"x|y": 0.9}), Policy(max_drop=1)))
    assert "| x\\|y | max_drop | mean |" in md


# ------------------------------------------------------------------------------------------ pytest plugin
RELEASE_TESTS = """
def test_release(jerc_results):
    assert jerc_results.accuracy("dino") >= 0.75
    assert jerc_results.accuracy("dino", "gaussian_noise", 5) >= 0.55
    assert jerc_results.drop("dino", "fog") < 25
    assert jerc_results["schema"] == "jerc-eval/results"
"""


@pytest.fixture
def plugin_pytester(pytester, monkeypatch):
    # load only this plugin in the inner run (an installed pytest11 entry point would register it a second time)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_release=RELEASE_TESTS)
    return pytester


def test_plugin_reads_results(plugin_pytester):
    path = write(plugin_pytester.path / "results.json", make_results())
    result = plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin", "--jerc-results", path)
    result.assert_outcomes(passed=1)
    failing = write(plugin_pytester.path / "bad.json", make_results(clean={"dino": 0.70}))
    plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin", "--jerc-results", failing).assert_outcomes(failed=1)


def test_plugin_fails_without_results_unless_optional(plugin_pytester):
    """A release gate that passes by checking nothing is the bug: without results the release tests fail."""
    result = plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin")
    result.assert_outcomes(errors=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*no jerc-eval results given: pass --jerc-results PATH*"])
    result = plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin", "-rs", "--jerc-results-optional")
    result.assert_outcomes(skipped=1)
    plugin_pytester.makeini("[pytest]\njerc_results_optional = true\n")
    plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin").assert_outcomes(skipped=1)


def test_gate_json_step_summary_and_annotations(tmp_path, capsys, monkeypatch):
    res = write(tmp_path / "results.json", make_results())
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert gate_main(res, overrides={"max_family_drop.noise": 5.0}, as_json=True) == 1
    out = capsys.readouterr().out
    doc = json.loads(out[:out.index("\n::error")])
    assert doc["schema"] == "jerc-eval/gate" and doc["verdict"] == "fail" and doc["exit_code"] == 1
    failed = [c for c in doc["checks"] if c["status"] == "fail"]
    assert failed and doc["n_failed"] == len(failed) and {"measured", "threshold", "unit"} <= set(failed[0])
    assert out.count("::error title=jerc-eval gate: ") == len(failed)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and len(text) > 20  # appended, not replaced
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert gate_main(res, overrides={"max_drop": 50}, as_json=True) == 0
    assert "::error" not in capsys.readouterr().out


def test_plugin_rejects_a_missing_file(plugin_pytester):
    result = plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin", "--jerc-results", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*jerc-eval results file 'nope.json' does not exist*"])


def test_plugin_fails_on_a_file_that_is_not_results(plugin_pytester):
    path = write(plugin_pytester.path / "other.json", {"hello": 1})
    result = plugin_pytester.runpytest("-p", "jerc_eval.pytest_plugin", "--jerc-results", path)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*is not a jerc-eval results document*"])


def test_dotted_override_keys_and_report_files(tmp_path, capsys):
    res = write(tmp_path / "results.json", make_results())
    md = tmp_path / "gate.md"
    assert gate_main(res, overrides={"max_family_drop.noise": 5.0}, summary_path=md) == 1
    assert md.stat().st_mode & 0o044  # readable by the CI uploader, not mkstemp's 0600
    with pytest.raises(UsageError, match="is a folder"):
        gate_main(res, overrides={"max_drop": 50}, junit_path=tmp_path)


def test_cli_maps_gate_exit_codes(tmp_path, capsys):
    from jerc_eval.cli import main

    res = write(tmp_path / "results.json", make_results())
    assert main(["gate", res, "--set", "max_drop", "50"]) == 0
    assert main(["gate", res, "--set", "max_drop", "1"]) == 1
    assert main(["gate", res, "--set", "max_dorp", "1"]) == 2
    assert "Did you mean: max_drop?" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ suite, backend, table
def _with_suite(doc, backend="reference", params=None, version=None):
    """Set the suite backend and the parameter table (the ``; params=`` suffix of suite.backend_version)."""
    base = version or ("jerc-eval-fast==1.0.0" if backend == "fast" else "imagecorruptions-imaug==1.1.5")
    doc["suite"]["backend"] = backend
    doc["suite"]["backend_version"] = base if params is None else f"{base}; params={params}"
    for r in doc["rows"]:
        r["backend"] = backend
    return doc


def test_param_table_is_read_from_backend_version():
    from jerc_eval.gate import param_table

    assert param_table(_with_suite(make_results(), "fast", "cifar10")) == "cifar10"
    assert param_table(_with_suite(make_results(), "reference", "cifar10",
                                   "imagecorruptions-imaug==1.1.5+make_cifar_c-port==1.0.0")) == "cifar10"
    assert param_table(_with_suite(make_results(), "reference", "imagenet")) == "imagenet"
    assert param_table(make_results()) == "imagenet"  # imagenet-c written before the table was recorded
    prerendered = make_results(suite="cifar10-c")  # the released CIFAR-10-C: made with the cifar10 table
    prerendered["suite"].update(backend="prerendered", backend_version="files:/data/CIFAR-10-C")
    assert param_table(prerendered) == "cifar10"
    with pytest.raises(UsageError, match="mix tables"):  # so AlexNet never normalises it either
        ResultsView(prerendered).mce("dino")
    plugin_suite = make_results()
    plugin_suite["suite"]["name"] = "my-suite"
    assert param_table(plugin_suite) is None


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_baseline_with_another_parameter_table_is_refused(tmp_path, backend):
    res = write(tmp_path / "r.json", _with_suite(make_results(), backend, "cifar10"))
    base = write(tmp_path / "b.json", _with_suite(make_results(), backend, "imagenet"))
    with pytest.raises(UsageError) as err:
        gate_main(res, baseline_path=base, overrides={"max_regression": 1})
    msg = str(err.value)
    assert "\n" not in msg and "'cifar10'" in msg and "'imagenet'" in msg
    assert "-S params imagenet" in msg and "-S params cifar10" in msg  # the fix, both ways
    # an older imagenet-c baseline (no params= suffix) used the ImageNet table: also refused against cifar10
    old = write(tmp_path / "old.json", make_results())
    with pytest.raises(UsageError, match="parameter table"):
        gate_main(res, baseline_path=old, overrides={"max_drop": 90})  # refused even when no rule uses it
    # same table: compared as before
    same = write(tmp_path / "s.json", _with_suite(make_results(), backend, "cifar10"))
    assert gate_main(res, baseline_path=same, overrides={"max_regression": 0}, out=io.StringIO()) == 0


def test_parameter_table_mismatch_is_exit_2_on_the_cli(tmp_path, capsys):
    from jerc_eval.cli import main

    res = write(tmp_path / "r.json", _with_suite(make_results(), "fast", "cifar10"))
    base = write(tmp_path / "b.json", _with_suite(make_results(), "fast", "imagenet"))
    assert main(["gate", res, "--baseline", base]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "params=cifar10" in err and "params=imagenet" in err


def test_baseline_with_another_suite_is_refused(tmp_path):
    res = write(tmp_path / "r.json", make_results())
    base = write(tmp_path / "b.json", make_results(suite="cifar10-c"))
    with pytest.raises(UsageError, match=r"suite 'imagenet-c' but the baseline used 'cifar10-c'.*--suite"):
        gate_main(res, baseline_path=base, overrides={"max_regression": 1})


def test_backend_mismatch_warns_for_regression_and_refuses_mce():
    fast_doc = _with_suite(_full(0.6), "fast", "imagenet")
    ref_base = _with_suite(_full(0.8), "reference", "imagenet")
    report = evaluate_gate(fast_doc, Policy(max_regression=100), ref_base)
    assert report.passed
    (warning,) = [w for w in report.warnings if "backend" in w]
    assert "'fast' vs 'reference'" in warning and "--backend reference" in warning
    with pytest.raises(UsageError, match=r"mix backends.*'fast'.*'reference'.*--backend reference"):
        evaluate_gate(fast_doc, Policy(max_mce=100), ref_base)
    with pytest.raises(UsageError, match="mix backends"):
        ResultsView(fast_doc).mce("dino", ResultsView(ref_base))
    with pytest.raises(UsageError, match="mix backends"):
        ResultsView(fast_doc).relative_mce("dino", ResultsView(ref_base))
    # same backend and table: mCE against the baseline as before (0.6 / 0.8 of its errors -> 75)
    fast_base = _with_suite(_full(0.8), "fast", "imagenet")
    (check,) = evaluate_gate(fast_doc, Policy(max_mce=76), fast_base).checks
    assert check.passed and check.measured == pytest.approx(75, abs=0.2)
    assert ResultsView(fast_doc).mce("dino", ResultsView(fast_base)) == pytest.approx(75, abs=0.2)


def test_mce_never_mixes_parameter_tables():
    cifar = _with_suite(_full(0.6), "reference", "cifar10", "imagecorruptions-imaug==1.1.5+make_cifar_c-port==1.0.0")
    # AlexNet's errors are ImageNet-C's: they never normalise the cifar10 table
    with pytest.raises(UsageError, match=r"AlexNet.*params=imagenet.*'cifar10'.*--baseline"):
        evaluate_gate(cifar, Policy(max_mce=1000))
    with pytest.raises(UsageError, match="mix tables"):
        ResultsView(cifar).mce("dino")
    with pytest.raises(UsageError, match="mix tables"):
        ResultsView(cifar).relative_mce("dino")
    # nor a baseline of the other table (refused by the baseline guard and by the accessor)
    inet = _with_suite(_full(0.8), "reference", "imagenet")
    with pytest.raises(UsageError, match="parameter table"):
        evaluate_gate(cifar, Policy(max_mce=1000), inet)
    with pytest.raises(UsageError, match="parameter table"):
        ResultsView(cifar).mce("dino", ResultsView(inet))
    # a cifar10 baseline normalises a cifar10 run
    base = _with_suite(_full(0.8), "reference", "cifar10", "imagecorruptions-imaug==1.1.5+make_cifar_c-port==1.0.0")
    (check,) = evaluate_gate(cifar, Policy(max_mce=76), base).checks
    assert check.passed and check.target == "vs baseline" and check.measured == pytest.approx(75, abs=0.2)
    # the imagenet table against AlexNet: as before
    assert evaluate_gate(_with_suite(_full(0.6), "fast", "imagenet"), Policy(max_mce=61)).passed
