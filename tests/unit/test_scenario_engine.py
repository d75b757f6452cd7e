"""The scenario engine without a stack: discovery, capabilities, failures, reports."""

import xml.etree.ElementTree as ET

import pytest

from sandbox.scenarios import Outcome, discover, run_scenario
from sandbox.scenarios.reports import write_html, write_junit, write_markdown
from tests.factories import make_endpoints

USER_SCENARIOS = """
from sandbox.scenarios import scenario


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
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_scenarios")
    (folder / "mine.py").write_text(USER_SCENARIOS)
    return discover([folder])


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
