"""The composite GitHub Action (action.yml) runs here as GitHub would run it: its evaluate and gate steps, in
bash, with the inputs put into each step's environment (the install step needs the network and is not run)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ACTION = Path(__file__).resolve().parents[1] / "action.yml"


def _run_step(step: dict, inputs: dict, cwd: Path, extra_env: dict) -> subprocess.CompletedProcess:
    env = {k: re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], str(v))
           for k, v in (step.get("env") or {}).items()}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **extra_env, **env})


@pytest.mark.skipif(shutil.which("jerc-eval") is None, reason="the jerc-eval console script is not installed")
def test_action_steps_evaluate_and_gate(checkpoints, tiny_npz, tmp_path):
    action = yaml.safe_load(ACTION.read_text())
    steps = {s.get("id"): s for s in action["runs"]["steps"]}
    assert action["runs"]["using"] == "composite" and {"install", "evaluate", "gate"} <= set(steps)
    config = tmp_path / "release.toml"
    config.write_text(f"""encoders = ["mae"]
dataset = "npz"
corruptions = ["contrast"]
severities = [1, 5]
workers = 1
alignment = false
floors = false
cache_dir = "{tmp_path / 'cache'}"
[encoder_options.mae]
checkpoint = "{checkpoints['mae']}"
[dataset_options]
path = "{tiny_npz}"
[probe_options]
c_steps = 2
""")
    (tmp_path / "gate.toml").write_text("min_clean_accuracy = 0.0\n")
    (tmp_path / "strict.toml").write_text("min_clean_accuracy = 0.999\n")
    out, summary, outputs = tmp_path / "out", tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs), "GITHUB_ACTIONS": "true",
           "JERC_EVAL_PLUGINS": "", "HF_HUB_OFFLINE": "1"}
    inputs = {"config": str(config), "out": str(out), "policy": str(tmp_path / "gate.toml"), "baseline": "",
              "cpu-only": "true"}
    ran = _run_step(steps["evaluate"], inputs, tmp_path, env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    ran = _run_step(steps["gate"], inputs, tmp_path, env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    doc = json.loads((out / "gate.json").read_text())
    assert doc["schema"] == "jerc-eval/gate" and doc["verdict"] == "pass"
    assert (out / "gate.xml").is_file() and "verdict=pass" in outputs.read_text() and summary.read_text()
    ran = _run_step(steps["gate"], {**inputs, "policy": str(tmp_path / "strict.toml"),
                                    "baseline": str(out / "results.json")}, tmp_path, env)
    assert ran.returncode == 1 and "::error title=jerc-eval gate: mae" in ran.stdout
    assert json.loads((out / "gate.json").read_text())["verdict"] == "fail"  # annotations kept out of the JSON
    assert outputs.read_text().strip().endswith("verdict=fail")
