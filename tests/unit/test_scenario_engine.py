"""The scenario engine without a stack: discovery, capabilities, failures, the checklist loop, reports."""

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.errors import ExitCode
from sandbox.scenarios import Outcome, discover, run_scenario
from sandbox.scenarios.context import ChecklistRun
from sandbox.scenarios.reports import write_html, write_junit, write_markdown
from sandbox.scenarios.runner import run_checklist
from tests.factories import make_endpoints

USER_SCENARIOS = """
from sandbox.scenarios import scenario
from sandbox.serving.specs import DeploymentSpec


@scenario("unit-passes", title="Passes", checklist="Item A", needs=["mlflow"], order=1)
def passes(ctx):
    with ctx.step("first"):
        ctx.evidence("it worked")
    ctx.link("somewhere", "http://127.0.0.1:1/x")


@scenario("unit-fails", title="Fails", checklist="Item B", order=2)
def fails(ctx):
    with ctx.step("ok step"):
        pass
    with ctx.step("bad step"):
        ctx.check(1 == 2, "one is not two")


@scenario("unit-crashes", title="Crashes", checklist="Item C", order=3)
def crashes(ctx):
    with ctx.step("explodes"):
        raise ConnectionError("S3 refused the connection")


@scenario("unit-needs-gpu", title="Needs a GPU", checklist="Item D", needs=["gpu"], order=4)
def needs_gpu(ctx):
    raise AssertionError("must not run")


@scenario("unit-prints", title="Prints", checklist="Item E", order=5)
def prints(ctx):
    print("chatty library output")


@scenario("unit-deploys", title="Deploys", checklist="Item F", order=6)
def deploys(ctx):
    with ctx.step("deploy"):
        ctx.serving.deploy(DeploymentSpec.model("checklist-unit", "models:/m/1"))
    ctx.evidence(f"scheduler {ctx.scheduler.name}, pipelines {ctx.pipelines.name}")
    ctx.remove_deployments("checklist-unit")
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_scenarios")
    (folder / "mine.py").write_text(USER_SCENARIOS)
    return folder


@pytest.fixture(scope="module")
def registry(user_dir):
    return discover([user_dir])


@pytest.fixture
def endpoints():
    return make_endpoints(capabilities=["mlflow", "s3"])


def _never():
    raise AssertionError("serving was not needed")


def test_discovery_finds_project_and_user_scenarios(registry):
    assert {"tracking", "pipelines", "registry", "data-versioning", "ab-testing"} <= set(registry)
    assert {"unit-passes", "unit-fails", "unit-crashes", "unit-needs-gpu"} <= set(registry)
    names = list(registry)
    assert names.index("unit-passes") < names.index("tracking")  # ordered by `order`


def test_outcomes(registry, endpoints):
    passed = run_scenario(registry["unit-passes"], endpoints, _never)
    assert passed.outcome == Outcome.PASSED
    assert passed.evidence == ["it worked"] and [s.name for s in passed.steps] == ["first"]

    failed = run_scenario(registry["unit-fails"], endpoints, _never)
    assert failed.outcome == Outcome.FAILED
    assert failed.reason == "bad step: one is not two"
    assert [s.ok for s in failed.steps] == [True, False]

    crashed = run_scenario(registry["unit-crashes"], endpoints, _never)
    assert crashed.outcome == Outcome.FAILED
    assert crashed.reason == "explodes: ConnectionError: S3 refused the connection"

    skipped = run_scenario(registry["unit-needs-gpu"], endpoints, _never)
    assert skipped.outcome == Outcome.SKIPPED
    assert skipped.reason == "the local profile lacks gpu"

    quiet = run_scenario(registry["unit-prints"], endpoints, _never)
    assert "chatty library output" in quiet.output


def test_reports(registry, endpoints, tmp_path):
    results = [
        run_scenario(registry[name], endpoints, _never) for name in ("unit-passes", "unit-fails", "unit-needs-gpu")
    ]
    write_junit(results, tmp_path / "junit.xml")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["unit-fails"].find("failure").get("message") == "bad step: one is not two"
    assert cases["unit-needs-gpu"].find("skipped") is not None

    write_markdown(results, tmp_path / "checklist.md", profile="local")
    markdown = (tmp_path / "checklist.md").read_text()
    assert "| Item A | `unit-passes` | ✓ passed" in markdown and "one is not two" in markdown

    write_html(results, tmp_path / "checklist.html", profile="local")
    page = (tmp_path / "checklist.html").read_text()
    assert "1 passed" in page and "1 failed" in page and "1 skipped" in page
    assert 'href="http://127.0.0.1:1/x"' in page


def test_junit_survives_control_characters_in_output(registry, endpoints, tmp_path):
    result = run_scenario(registry["unit-passes"], endpoints, _never)
    result.output = "\x1b[92mSUCCESS\x1b[0m and a bell \x07"
    result.reason = "\x1b[91mred\x1b[0m"
    write_junit([result], tmp_path / "junit.xml")
    text = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase/system-out").text
    assert "SUCCESS and a bell" in text


def test_select_keeps_the_order_asked_for_and_refuses_unknown_names(registry, tmp_path):
    from sandbox.errors import ConfigError
    from sandbox.scenarios.runner import select

    assert [s.name for s in select(["unit-fails", "unit-passes"])] == ["unit-fails", "unit-passes"]
    assert [s.name for s in select(None)] == list(registry)
    with pytest.raises(ConfigError, match="unknown scenario"):
        select(["unit-passes", "nope"])


class FakeProfile:
    """A profile's backends as the checklist uses them: what was deployed and undeployed is recorded."""

    def __init__(self):
        self.calls = []
        self.records = {}

    def serving(self):
        return SimpleNamespace(deploy=self._deploy, get=self.records.get, undeploy=self._undeploy)

    def scheduler(self):
        return SimpleNamespace(name="quota")

    def pipelines(self):
        return SimpleNamespace(name="kfp")

    def _deploy(self, spec):
        self.calls.append(("deploy", spec.name))
        self.records[spec.name] = spec

    def _undeploy(self, name):
        self.calls.append(("undeploy", name))
        del self.records[name]


ORDER = ["unit-deploys", "unit-fails", "unit-needs-gpu", "unit-passes"]


def test_the_checklist_runs_each_scenario_in_the_order_given_with_the_profiles_backends(registry, endpoints, capsys):
    profile = FakeProfile()
    run = ChecklistRun("ab12cd34")
    results = run_checklist([registry[name] for name in ORDER], endpoints, profile, run=run, progress=False)
    assert [(r.name, r.outcome) for r in results] == [
        ("unit-deploys", Outcome.PASSED),
        ("unit-fails", Outcome.FAILED),  # and the rest still run
        ("unit-needs-gpu", Outcome.SKIPPED),
        ("unit-passes", Outcome.PASSED),
    ]
    assert results[0].evidence == ["scheduler quota, pipelines kfp"]
    assert profile.calls == [("deploy", "checklist-unit"), ("undeploy", "checklist-unit")]
    assert capsys.readouterr().err == ""  # no progress asked for


def test_the_checklist_shows_a_line_per_scenario_and_the_run_where_the_sandbox_does_not_own_the_stack(
    registry, capsys, monkeypatch
):
    from sandbox.scenarios import artifacts

    monkeypatch.setattr(artifacts, "find", lambda endpoints, run_id: artifacts.RunArtifacts(run_id))
    remote = make_endpoints(profile="remote", capabilities=["mlflow"], owned=False)
    run = ChecklistRun("ab12cd34")
    results = run_checklist([registry["unit-passes"], registry["unit-fails"]], remote, FakeProfile(), run=run)
    assert [r.outcome for r in results] == [Outcome.PASSED, Outcome.FAILED]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Checklist run ab12cd34: what it makes on remote is tagged with this id"
    assert lines[1].startswith(" ✓ scenario unit-passes: Passes · passed (")
    assert lines[2].startswith(" ✗ scenario unit-fails: Fails · failed · bad step: one is not two (")


def test_scenario_run_writes_the_reports_and_fails_when_a_scenario_does(registry, user_dir, tmp_path, monkeypatch):
    from sandbox.profiles.local import LocalProfile

    profile = FakeProfile()
    endpoints = make_endpoints(capabilities=["mlflow", "s3"])
    monkeypatch.setattr(LocalProfile, "status", lambda self: SimpleNamespace(endpoints=endpoints))
    for backend in ("serving", "scheduler", "pipelines"):
        monkeypatch.setattr(LocalProfile, backend, lambda self, backend=backend: getattr(profile, backend)())
    junit, report = tmp_path / "junit.xml", tmp_path / "report"
    args = ["--scenarios-dir", str(user_dir), "--junit", str(junit), "--report", str(report), "--dir", str(tmp_path)]
    result = CliRunner().invoke(app, ["scenario", "run", *ORDER, *args, "--jobs", "1"])  # the fake records in-process
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "1 scenario(s) failed: unit-fails" in result.output
    assert profile.calls == [("deploy", "checklist-unit"), ("undeploy", "checklist-unit")]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert [case.get("name") for case in suite.iter("testcase")] == ORDER
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    assert "| Item F | `unit-deploys` | ✓ passed" in (report / "checklist.md").read_text()
    assert "1 failed" in (report / "checklist.html").read_text()
