"""pytest plugin: release tests over a jerc-eval results document.

Registered through the ``pytest11`` entry point ``jerc_eval = jerc_eval.pytest_plugin`` (or list it in
``pytest_plugins``). Run ``pytest --jerc-results results/results.json`` (or set ``jerc_results = PATH`` in the
pytest ini section). A test that uses the ``jerc_results`` fixture *fails* when no results are given -- a release
gate must not pass by checking nothing; ``--jerc-results-optional`` (or ``jerc_results_optional = true``) skips
such tests instead, for local runs::

    def test_dino_is_release_ready(jerc_results):
        assert jerc_results.accuracy("dino") >= 0.70
        assert jerc_results.accuracy("dino", "gaussian_noise", 5) >= 0.40
        assert jerc_results.drop("dino", "pixelate") <= 15.0

The fixture is a :class:`jerc_eval.gate.ResultsView`: the loaded results document (a dict) with accessors.
This module imports nothing heavy (no torch), so it costs nothing in projects that never use it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

OPTION = "--jerc-results"
INI = "jerc_results"
SKIP_REASON = ("no jerc-eval results given: pass --jerc-results PATH (the results.json written by "
               "`jerc-eval run`) or set jerc_results in the pytest ini section")
MISSING = (SKIP_REASON + "; a release test without results fails (pass --jerc-results-optional to skip it "
           "instead)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jerc-eval", "jerc-eval release tests")
    group.addoption(OPTION, action="store", dest="jerc_results", default=None, metavar="PATH",
                    help="results.json written by `jerc-eval run`, for the jerc_results fixture")
    group.addoption("--jerc-results-optional", action="store_true", dest="jerc_results_optional", default=False,
                    help="skip (instead of fail) tests that need jerc-eval results when none are given")
    parser.addini(INI, "default results.json for the jerc_results fixture (--jerc-results wins)", default="")
    parser.addini("jerc_results_optional", "skip (instead of fail) release tests without results", type="bool",
                  default=False)


def _results_path(config: pytest.Config) -> Path | None:
    value = config.getoption("jerc_results")
    if value:
        return Path(value)
    ini = config.getini(INI)
    if ini:
        path = Path(ini)
        return path if path.is_absolute() else Path(config.rootpath) / path
    return None


def pytest_configure(config: pytest.Config) -> None:
    path = _results_path(config)
    if path is not None and not path.is_file():  # an explicit path that does not exist is an error, not a skip
        raise pytest.UsageError(f"jerc-eval results file {str(path)!r} does not exist; pass the results.json "
                                f"written by `jerc-eval run` to {OPTION}")


def pytest_report_header(config: pytest.Config) -> str | None:
    path = _results_path(config)
    return f"jerc-eval results: {path}" if path is not None else None


@pytest.fixture(scope="session")
def jerc_results(request: pytest.FixtureRequest):
    """The results document given by ``--jerc-results`` as a :class:`jerc_eval.gate.ResultsView`; fails the test
    (one line) when none was given (skips it with ``--jerc-results-optional``) or when the file is not a
    jerc-eval results document."""
    from .errors import UsageError
    from .gate import ResultsView

    path = _results_path(request.config)
    if path is None:
        if request.config.getoption("jerc_results_optional") or request.config.getini("jerc_results_optional"):
            pytest.skip(SKIP_REASON)
        pytest.fail(MISSING, pytrace=False)
    try:
        return ResultsView.load(path)
    except UsageError as exc:
        pytest.fail(str(exc), pytrace=False)
