"""The production checklist on a fresh real stack, then on a broken one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import pytest

from sandbox.errors import ExitCode

pytestmark = pytest.mark.integration

CHECKLIST = ["tracking", "pipelines", "registry", "data-versioning", "ab-testing", "gpu-quotas", "drift", "retraining"]


@pytest.fixture(scope="module")
def checklist_stack(tmp_path_factory):
    from tests.integration.conftest import Stack

    stack = Stack(tmp_path_factory.mktemp("checklist") / "sandbox")
    stack.cli("up")
    yield stack
    stack.cli("down", "--purge", check=False)


def test_the_checklist_passes_and_writes_reports(checklist_stack, tmp_path):
    junit, report = tmp_path / "junit.xml", tmp_path / "report"
    result = checklist_stack.cli("checklist", "--junit", str(junit), "--report", str(report), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CHECKLIST:
        assert f"scenario {name}:" in result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    assert {case.get("name") for case in suite.iter("testcase")} == set(CHECKLIST)
    page = (report / "checklist.html").read_text()
    assert "8 passed" in page and "#/experiments/" in page  # links to the MLflow runs
    assert "s3://mlflow-artifacts/" in (report / "checklist.md").read_text()  # tracking's evidence
    # Scenarios clean up after themselves: no deployment is left behind.
    assert checklist_stack.status()["deployments"] == []


def test_with_s3_stopped_tracking_fails_naming_s3_and_the_rest_still_report(checklist_stack, tmp_path):
    s3_pid = checklist_stack.pids()["s3"]
    os.kill(s3_pid, signal.SIGTERM)
    psutil.wait_procs([psutil.Process(s3_pid)], timeout=15)
    junit = tmp_path / "broken.xml"
    result = checklist_stack.cli("scenario", "run", "tracking", "registry", "--junit", str(junit), check=False)
    assert result.returncode == ExitCode.FAILED
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"tracking", "registry"}  # the runner went on after the first failure
    tracking_failure = cases["tracking"].find("failure").get("message")
    assert "S3 at http://127.0.0.1:" in tracking_failure
    assert cases["registry"].find("failure") is not None
    # `sandbox up` brings S3 back and the checklist item passes again.
    checklist_stack.cli("up")
    assert checklist_stack.cli("scenario", "run", "tracking", check=False).returncode == 0


def test_scenario_list_and_unknown_names(checklist_stack):
    listed = subprocess.run(
        [sys.executable, "-m", "sandbox", "scenario", "list"], capture_output=True, text=True, check=True
    ).stdout
    for name in CHECKLIST:
        assert name in listed
    unknown = checklist_stack.cli("scenario", "run", "nope", check=False)
    assert unknown.returncode == ExitCode.USAGE and "unknown scenario" in unknown.stderr
    assert json.loads(checklist_stack.cli("status", "--json").stdout)["state"] == "running"
