"""The fixtures `pytest --sandbox` gives a suite (docs/testing.md): one sandbox per session, its clients,
names this session owns, the reference model, deployments undone after each test, and checklist scenarios.

Errors from the sandbox become one readable failure (what failed, the fix, a service's last log lines), and
a failing test that used the sandbox gets a report section naming what of it is not running.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from sandbox.endpoints import InferenceEndpoint, patched_environ
from sandbox.errors import SandboxError
from sandbox.scenarios.results import ScenarioResult
from sandbox.scenarios.runner import client_environment, skip_reason
from sandbox.serving.specs import DeploymentSpec
from sandbox.testing.handle import RunNames, SandboxHandle, SandboxUnavailableError, attach_sandbox, start_sandbox
from sandbox.testing.options import pytest_addoption  # noqa: F401 - a hook: the options under `-p sandbox.testing` alone

HANDLE = pytest.StashKey[SandboxHandle]()
REPORT_SECTION = "sandbox: what is not running"

_deployment_numbers = itertools.count(1)


def _fail(what: str, exc: SandboxError) -> NoReturn:
    """Fail with the sandbox's own words (what, the fix, the log lines), not a traceback through the library."""
    if not isinstance(exc, SandboxUnavailableError):
        exc = SandboxUnavailableError(f"{what}: {exc.message}", exc)
    raise pytest.fail.Exception(exc.describe(), pytrace=False) from None


def _require(handle: SandboxHandle, capability: str) -> None:
    """Skip, saying what to configure, where the stack lacks ``capability`` (as a checklist scenario is)."""
    if capability not in handle.endpoints.capabilities:
        pytest.skip(skip_reason(handle.endpoints, [capability]))


@pytest.fixture(scope="session")
def ml_sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """The session's sandbox: started in a temporary folder and purged at the end, or the one `--sandbox-dir`
    names (left running). While it is up, this process's environment is what `sandbox env` exports."""
    config = request.config
    directory = config.getoption("--sandbox-dir")
    profile = config.getoption("--sandbox-profile")
    config_file = config.getoption("--sandbox-config")
    umask = os.umask(0o077)  # start/attach make it private (as the CLI does); the session's end restores it
    os.umask(umask)
    try:
        if directory:
            handle = attach_sandbox(directory, profile, config_file=config_file)
        else:
            folder = tmp_path_factory.mktemp("ml-sandbox") / "sandbox"
            handle = start_sandbox(folder, profile, config_file=config_file)
    except SandboxError as exc:
        os.umask(umask)
        _fail("the sandbox", exc)
    config.stash[HANDLE] = handle
    try:
        with patched_environ(handle.env()), client_environment(handle.endpoints, handle.run):
            yield handle
            if handle.attached or not handle.endpoints.owned:
                handle.clean_up()  # a sandbox this session purges needs no sweeping
    finally:
        del config.stash[HANDLE]
        if not handle.attached:
            handle.down(purge=True)
        os.umask(umask)


@pytest.fixture(scope="session")
def sandbox_name(ml_sandbox: SandboxHandle) -> RunNames:
    """``sandbox_name("fraud")`` -> ``checklist-fraud-<run id>``: a name this session owns and removes at its end."""
    return ml_sandbox.names


@pytest.fixture(scope="session")
def mlflow_client(ml_sandbox: SandboxHandle):
    """An `mlflow.MlflowClient` on the sandbox's tracking server and registry (artifacts reach its S3)."""
    _require(ml_sandbox, "mlflow")
    from mlflow import MlflowClient

    uri = ml_sandbox.endpoints.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="session")
def s3_client(ml_sandbox: SandboxHandle):
    """A boto3 S3 client on the sandbox's object store."""
    _require(ml_sandbox, "s3")
    return ml_sandbox.s3_client()


@pytest.fixture(scope="session")
def minio_client(ml_sandbox: SandboxHandle):
    """A `minio.Minio` client on the sandbox's object store."""
    _require(ml_sandbox, "s3")
    return ml_sandbox.minio_client()


@pytest.fixture(scope="session")
def reference_model(ml_sandbox: SandboxHandle) -> str:
    """The project's reference model (a RandomForest on 8 features f0..f7, two classes), registered under a
    name this session owns; its ``models:/NAME/VERSION`` URI."""
    _require(ml_sandbox, "mlflow")
    from sandbox.serving.reference_model import register_reference_model

    name = ml_sandbox.names("reference-model")
    with _mlflow_experiment_kept():
        model = register_reference_model(ml_sandbox.endpoints.mlflow_tracking_uri, name, experiment=name)
    return model.uri


@contextlib.contextmanager
def _mlflow_experiment_kept() -> Iterator[None]:
    """The registration selects its own experiment (`mlflow.set_experiment`); the test's selection comes back."""
    from mlflow.tracking import fluent

    selected, variable = fluent._active_experiment_id, os.environ.get("MLFLOW_EXPERIMENT_ID")
    try:
        yield
    finally:
        fluent._active_experiment_id = selected
        if variable is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = variable


@pytest.fixture(scope="session")
def serving_headers(ml_sandbox: SandboxHandle) -> dict[str, str]:
    """The headers a request to the sandbox's model servers and routers carries: ``{"Authorization": "Bearer
    TOKEN"}`` (`serving.auth: token`, the default), ``{}`` with `serving.auth: none`."""
    return ml_sandbox.endpoints.serving_headers()


@pytest.fixture
def deploy(ml_sandbox: SandboxHandle) -> Iterator[Callable[..., InferenceEndpoint]]:
    """``deploy(model_uri, name=None, **options)`` serves a model through the profile's serving backend under
    a name this session owns, and returns its `InferenceEndpoint` (``url``, ``v1_predict``, ``v2_infer``,
    ``grpc``, ``name``); ``options`` are `DeploymentSpec`'s (batch_size, inference_log, ...). Its requests need
    the `serving_headers` fixture's headers (the serving token). Undeployed after the test."""
    _require(ml_sandbox, "serving")
    deployed: list[str] = []

    def deploy_model(model_uri: str, name: str | None = None, **options) -> InferenceEndpoint:
        full_name = ml_sandbox.names(name or f"model-{next(_deployment_numbers)}")
        deployed.append(full_name)  # before the call: a half-made deployment is removed too
        try:
            ml_sandbox.serving.deploy(DeploymentSpec.model(full_name, model_uri, **options))
        except SandboxError as exc:
            _fail(f"deploying {model_uri} as {full_name}", exc)
        return ml_sandbox.refresh().inference[full_name]

    yield deploy_model
    for name in reversed(deployed):
        if ml_sandbox.serving.get(name) is not None:
            ml_sandbox.serving.undeploy(name)
    if deployed:
        ml_sandbox.refresh()


@pytest.fixture(scope="session")
def checklist(ml_sandbox: SandboxHandle) -> Callable[..., list[ScenarioResult]]:
    """``checklist(*scenario_names, scenarios_dir=None)`` runs those scenarios of the production checklist
    (`sandbox scenario list`), as `sandbox scenario run` does; one result each: ``name``, ``outcome``
    (`sandbox.scenarios.Outcome`), ``steps``, ``error``, ``evidence``."""

    def run(*names: str, scenarios_dir: list[Path] | None = None) -> list[ScenarioResult]:
        try:
            return ml_sandbox.run_checklist(*names, scenarios_dir=scenarios_dir)
        except SandboxError as exc:
            _fail(f"checklist {' '.join(names) or '(all)'}", exc)

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used the sandbox: a section naming what of it is not running, with its error."""
    report = yield
    handle = item.config.stash.get(HANDLE, None)
    if report.failed and handle is not None and "ml_sandbox" in getattr(item, "fixturenames", ()):
        report.sections.append((REPORT_SECTION, handle.report()))
    return report
