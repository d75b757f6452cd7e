"""The pytest plugin (sandbox.testing) as a user's CI runs it: a scratch project with one test file that imports
nothing of the sandbox, run in a pytest of its own (`runpytest_subprocess`).

It starts a sandbox with `--sandbox` and purges it at the end; attaches to a running one with `--sandbox-dir`
and leaves it running, with nothing of the session's left on it; a failing test's report names the deployment
that died, with its log; a failed `up` is one readable error; without the options no fixture exists and
nothing of the sandbox but the options is imported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from sandbox.testing import SandboxHandle, start_sandbox

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

INNER_TIMEOUT_S = 300

SCRATCH_TESTS = '''
"""A user's project: its own code and the sandbox's fixtures (pytest --sandbox), nothing imported from it."""

import httpx


def features(rows):
    """``rows`` rows of the reference model's 8 features as one V2 tensor."""
    return {"inputs": [{"name": "input-0", "shape": [rows, 8], "datatype": "FP64", "data": [0.5] * (8 * rows)}]}


def test_the_reference_model_answers_over_v2(deploy, reference_model, serving_headers):
    endpoint = deploy(reference_model)
    response = httpx.post(endpoint.v2_infer, json=features(3), headers=serving_headers, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["outputs"][0]["data"]
    assert len(predictions) == 3 and set(predictions) <= {0, 1}


def test_a_named_deployment_and_the_stores(deploy, reference_model, sandbox_name, mlflow_client, s3_client,
                                           minio_client, ml_sandbox, serving_headers):
    endpoint = deploy(reference_model, name="fraud")
    assert endpoint.name == sandbox_name("fraud")
    answer = httpx.post(endpoint.v1_predict, json={"instances": [[0.5] * 8]}, headers=serving_headers, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    model = reference_model.split("/")[1]
    assert mlflow_client.get_registered_model(model).name == model
    bucket, key = ml_sandbox.endpoints.data_bucket, sandbox_name("inputs") + "/rows.csv"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"f0\\n1\\n")
    assert [item.object_name for item in minio_client.list_objects(bucket, prefix=key)] == [key]
'''

CHECKLIST_TEST = """

def test_a_scenario_of_the_production_checklist(checklist):
    [result] = checklist("tracking")
    assert (result.name, result.outcome.value, result.error) == ("tracking", "passed", "")
    assert result.steps and all(step.ok for step in result.steps)
"""

DYING_MODEL_TEST = """

import os
import signal


def test_a_model_server_that_died(deploy, reference_model, ml_sandbox, serving_headers):
    endpoint = deploy(reference_model, name="doomed")
    [served] = [status for status in ml_sandbox.serving.statuses() if status.name == endpoint.name]
    os.killpg(int(served.instance.split()[1]), signal.SIGKILL)  # as an out-of-memory kill would
    httpx.post(endpoint.v2_infer, json=features(1), headers=serving_headers, timeout=30)
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT_S)


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> SandboxHandle:
    """A sandbox this module starts with the library (as the project's own stacks do); nothing restarts what
    dies in it (no supervisor), and it runs no JupyterLab, which no test here needs."""
    folder = tmp_path_factory.mktemp("attached")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # no sandbox.yaml, no SANDBOX_* but the ones given
        for key in [key for key in os.environ if key.startswith("SANDBOX_")]:
            patch.delenv(key)
        umask = os.umask(0o022)
        os.umask(umask)
        handle = start_sandbox(folder / "sandbox", supervisor__enabled=False, notebooks__enabled=False)
        os.umask(umask)  # start_sandbox made it private, as the CLI does: not for the tests after this module
    try:
        yield handle
    finally:
        handle.down(purge=True)


@pytest.fixture(scope="module")
def attached_run(running, tmp_path_factory) -> pytest.RunResult:
    """The scratch project plus a test whose model server dies, run once against the running sandbox
    (`--sandbox-dir`); two tests read the result (`pytester` is per test, so this runs pytest itself)."""
    folder = tmp_path_factory.mktemp("scratch-attached")
    (folder / "test_scratch.py").write_text(SCRATCH_TESTS + DYING_MODEL_TEST)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sandbox-dir", str(running.dir)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=INNER_TIMEOUT_S,
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith(("SANDBOX_", "PYTEST_"))},
            "SANDBOX_NOTEBOOKS__ENABLED": "false",  # the settings it was started with, as the CLI would be given them
        },
    )
    return pytest.RunResult(
        completed.returncode, completed.stdout.splitlines(), completed.stderr.splitlines(), time.monotonic() - started
    )


def test_a_scratch_project_starts_and_purges_its_own_sandbox(pytester, monkeypatch):
    pytester.makepyfile(test_scratch=SCRATCH_TESTS + CHECKLIST_TEST)
    monkeypatch.setenv("SANDBOX_NOTEBOOKS__ENABLED", "false")  # read as `sandbox up` reads it; none is needed
    result = _run(pytester, "--sandbox")
    result.assert_outcomes(passed=3)
    result.stderr.no_fnmatch_line("*Traceback*")
    made = list(pytester.path.glob("runpytest-*/ml-sandbox*"))  # the inner session's temporary folders
    assert made and not [folder for folder in made if (folder / "sandbox").exists()], "not purged"


def test_against_a_running_sandbox_the_session_leaves_it_running_and_clean(running, attached_run):
    attached_run.assert_outcomes(passed=2, failed=1)
    status = running.status()
    assert status.overall == "running", status
    assert status.warnings == []  # what the session's deployments wrote into the sandbox is private
    assert running.serving.statuses() == []  # every deployment undeployed after its test
    leftovers = _leftovers(running)
    assert leftovers == [], leftovers


def test_a_failing_test_names_what_of_the_sandbox_failed(attached_run):
    attached_run.stdout.fnmatch_lines(
        [
            "*_ test_a_model_server_that_died _*",
            "E *httpx.*Error: *",  # refused, or the connection dropped
            "*- sandbox: what is not running -*",
            "Not running in the local sandbox at *:",
            "- deployment checklist-doomed-*: stopped*",
            "    | *",
        ]
    )


def test_a_failed_up_is_one_readable_error(pytester, monkeypatch):
    pytester.makepyfile(test_scratch="def test_needs_it(ml_sandbox):\n    pass\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("SANDBOX_MLFLOW__PORT", str(port))
        result = _run(pytester, "--sandbox")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"*the local sandbox in * did not come up: port {port} (mlflow) is already in use*. Fix: *mlflow.port*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*sandbox/profiles/*")  # no frames of the library


def test_without_the_options_no_fixture_exists_and_nothing_loads(pytester):
    pytester.makepyfile(
        test_scratch="""
        import sys

        def test_needs_it(ml_sandbox):
            pass

        def test_only_the_options_were_imported():
            loaded = sorted(name for name in sys.modules if name.startswith("sandbox"))
            assert loaded == ["sandbox", "sandbox.testing", "sandbox.testing.options"]
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'ml_sandbox' not found*"])
    listed = _run(pytester, "-p", "sandbox.testing", "--fixtures")
    for fixture in ("ml_sandbox [[]session scope[]]*", "deploy -- *", "checklist [[]session scope[]]*"):
        listed.stdout.fnmatch_lines([fixture])


def _leftovers(handle: SandboxHandle) -> list[str]:
    """What is on the sandbox besides MLflow's Default experiment: registered models, experiments, and every
    object in every bucket (artifacts included). The module's sandbox holds nothing of its own."""
    client = handle.endpoints.mlflow_client()
    found = [f"model {model.name}" for model in client.search_registered_models()]
    found += [f"experiment {item.name}" for item in client.search_experiments() if item.name != "Default"]
    s3 = handle.minio_client()
    for bucket in handle.endpoints.buckets:
        found += [f"s3://{bucket}/{item.object_name}" for item in s3.list_objects(bucket, recursive=True)]
    return found
