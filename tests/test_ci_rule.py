"""Under CI a missing real component fails the run; a skip for a condition of the machine stays a skip.

Runs pytest in a subprocess on a few small test files with this suite's conftest.py as a plugin,
once with CI=true and once without, and reads each test's outcome from the JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CASES = {
    "test_cases.py": '''
        import pytest
        from conftest import missing

        def test_missing_part():
            missing("alfworld", "no ALFWorld games under /nowhere")

        @pytest.mark.postgres
        def test_marked_part():
            pass

        def test_part_from_fixture(pg_url):
            pass

        def test_condition_of_the_machine():
            pytest.skip("a GPU is visible")

        @pytest.mark.skipif(True, reason="not on this platform")
        def test_skipif_condition():
            pass

        def test_runs():
            assert True
    ''',
    # pytest's own formatting of a failure breaks (as on a traceback entry with no line number).
    "test_unformattable.py": '''
        import _pytest.python

        def test_fails_unformattably(monkeypatch):
            def broken(self, excinfo, style=None):
                raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")

            monkeypatch.setattr(_pytest.python.Function, "_repr_failure_py", broken)
            assert 1 == 2, "the real failure"

        def test_after_it():
            pass
    ''',
    # At import, as a module that needs the part throughout does it.
    "test_module_needs_part.py": '''
        from conftest import missing

        missing("twx", "no java on PATH")

        def test_never_collected():
            pass
    ''',
}


def _run(tmp_path: Path, ci: bool) -> tuple[dict[str, tuple[str, str]], str]:
    """Outcome and message per test (or per module that failed to collect), and pytest's output."""
    for name, body in CASES.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    postgres: x\n    twx: x\n    alfworld: x\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "SKILLMEM_TEST_PG_URL", "SKILLMEM_TEST_TALLY", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins play no part here and cost seconds
    if ci:
        env["CI"] = "true"
    xml = tmp_path / f"report-{ci}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
         f"--junitxml={xml}", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert xml.exists(), out
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name") or case.get("classname")
        result = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcomes[name] = ("passed", "") if result is None else (result.tag, result.get("message") or "")
        if result is not None and result.tag == "error" and "collection" in (result.get("message") or ""):
            outcomes[name] = ("error", result.text or "")  # a module: the cause is in the report's text
    return outcomes, out


def test_under_ci_only_a_missing_real_component_fails(tmp_path):
    got, out = _run(tmp_path, ci=True)
    for name in ("test_missing_part", "test_marked_part", "test_part_from_fixture"):
        kind, message = got[name]
        assert kind in ("failure", "error"), (name, got, out)
        assert "CI=true: missing real component" in message, (name, message)
    assert "no ALFWorld games under /nowhere" in got["test_missing_part"][1]
    assert "SKILLMEM_TEST_PG_URL" in got["test_marked_part"][1] and "PostgreSQL" in got["test_part_from_fixture"][1]
    module = [v for k, v in got.items() if "test_module_needs_part" in k]
    assert module and module[0][0] == "error" and "no java on PATH" in module[0][1], (got, out)
    # Conditions of the machine are not parts CI failed to provide: they stay skips.
    assert got["test_condition_of_the_machine"] == ("skipped", "a GPU is visible")
    assert got["test_skipif_condition"] == ("skipped", "not on this platform")
    assert got["test_runs"][0] == "passed"


def test_a_failure_pytest_cannot_format_is_reported_and_the_run_goes_on(tmp_path):
    got, out = _run(tmp_path, ci=True)
    assert "INTERNALERROR" not in out, out
    kind, _ = got["test_fails_unformattably"]
    assert kind == "failure" and "AssertionError: the real failure" in out, (got, out)
    assert "test_fails_unformattably" in out and got["test_after_it"][0] == "passed"


def test_outside_ci_a_missing_real_component_skips_with_its_reason(tmp_path):
    got, out = _run(tmp_path, ci=False)
    for name in ("test_missing_part", "test_marked_part", "test_part_from_fixture",
                 "test_condition_of_the_machine", "test_skipif_condition"):
        assert got[name][0] == "skipped", (name, got, out)
    assert got["test_missing_part"][1] == "missing real component (real ALFWorld): no ALFWorld games under /nowhere"
    assert "TextWorld-Express" in out or "no java on PATH" in out  # the module skipped, saying why
    assert "test_never_collected" not in got and got["test_runs"][0] == "passed"
