"""A sandbox for a test session: started in a folder or attached to, and the handle tests and stacks hold.

The same library path as the CLI (`get_profile(load_config(...))`, the profile's own lock), so a suite
tests what `sandbox up` runs. Everything a session makes is named by `RunNames` (the checklist's reserved
prefix and the session's run id), which is how `SandboxHandle.clean_up` finds it again on a shared platform.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from sandbox.config import load_config
from sandbox.endpoints import Endpoints
from sandbox.errors import NotRunningError, SandboxError
from sandbox.files import use_private_umask
from sandbox.profiles import Profile, ProfileStatus, get_profile
from sandbox.profiles.base import ServiceState
from sandbox.scenarios import artifacts
from sandbox.scenarios.context import ChecklistRun
from sandbox.scenarios.names import RUN_ID_TAG, scenario_name
from sandbox.scenarios.results import ScenarioResult

LOG_LINES = 8  # of each component that is not running, in a failed test's report


class SandboxUnavailableError(SandboxError):
    """The sandbox a session needs did not come up, or is not there to attach to; says which part and why."""

    def __init__(self, message: str, cause: SandboxError):
        super().__init__(message, hint=cause.hint, details=cause.details)
        self.exit_code = cause.exit_code

    def describe(self) -> str:
        """The CLI's wording: ``message. Fix: hint``, then the details (a service's last log lines)."""
        fix = f" Fix: {self.hint}" if self.hint else ""
        return f"{self.message}.{fix}" + (f"\n{self.details}" if self.details else "")


class RunNames:
    """Names for what one test session makes: the checklist's prefix, then the base, then the session's id.

    ``names("fraud")`` is ``checklist-fraud-1a2b3c4d``: a DNS-1123 label when the base is one, which the
    checklist's clean-up (`sandbox.scenarios.artifacts`) finds by the id and no user's name can collide with.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id

    def __call__(self, base: str) -> str:
        if self.owns(base):
            return base  # named already (deploy(name=names("x")) is fine)
        return scenario_name(base, self.run_id)

    def owns(self, name: str) -> bool:
        return artifacts.owns(name, self.run_id)

    @property
    def tags(self) -> dict[str, str]:
        """MLflow tags that mark an entity as this session's (found and deleted with it)."""
        return {RUN_ID_TAG: self.run_id}


class SandboxHandle:
    """A running sandbox: where it is, its endpoints and backends, and what this session made on it."""

    def __init__(self, profile: Profile, endpoints: Endpoints, *, attached: bool, run: ChecklistRun | None = None):
        self.profile = profile
        self.endpoints = endpoints
        self.attached = attached  # this session did not start it, so it does not take it down
        self.run = run or ChecklistRun()
        self.names = RunNames(self.run.run_id)

    def __repr__(self) -> str:
        how = "attached" if self.attached else "started"
        return f"<SandboxHandle {self.profile.name} {how} {self.dir} run {self.run.run_id}>"

    @property
    def dir(self) -> Path:
        return self.profile.config.root

    @cached_property
    def serving(self):
        """The profile's serving backend (sandbox.serving.specs.ServingBackend)."""
        return self.profile.serving()

    @cached_property
    def pipelines(self):
        """The profile's pipeline runner (sandbox.pipelines.runner.PipelineRunner)."""
        return self.profile.pipelines()

    @cached_property
    def scheduler(self):
        """The profile's GPU scheduling and quota backend (sandbox.gpu.backend.SchedulerBackend)."""
        return self.profile.scheduler()

    def env(self) -> dict[str, str]:
        """What `sandbox env` exports: MLflow, S3 and the sandbox's location, for this process or a child."""
        return self.endpoints.env()

    def refresh(self) -> Endpoints:
        """Read the endpoints again (after a deploy, ``endpoints.inference`` lists it)."""
        self.endpoints = self.profile.endpoints()
        return self.endpoints

    def status(self) -> ProfileStatus:
        return self.profile.status()

    def s3_client(self):
        """A boto3 S3 client on the sandbox's object store (path-style; TLS verified as boto3 and minio do)."""
        import boto3
        from botocore.config import Config

        endpoints = self.endpoints
        # boto3 reads AWS_CA_BUNDLE itself; SSL_CERT_FILE is what minio and the remote profile's checks read.
        verify = None if os.environ.get("AWS_CA_BUNDLE") else os.environ.get("SSL_CERT_FILE") or None
        return boto3.client(
            "s3",
            endpoint_url=endpoints.s3_endpoint_url,
            aws_access_key_id=endpoints.s3_access_key,
            aws_secret_access_key=endpoints.s3_secret_key,
            region_name=endpoints.s3_region,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
            verify=verify,
        )

    def minio_client(self):
        """A minio client (https when the endpoint is; its CA from SSL_CERT_FILE, else certifi's)."""
        return self.endpoints.minio_client()

    def run_checklist(self, *names: str, scenarios_dir: list[Path] | None = None) -> list[ScenarioResult]:
        """Run the named scenarios of the production checklist (all when none are named) as `sandbox checklist`
        does; one `ScenarioResult` each (``name``, ``outcome``, ``steps``, ``error``).

        A run of its own: on a platform the sandbox does not own, what the scenarios made is deleted after
        each, and this session's own names are left alone. The process environment is restored after.
        """
        from sandbox.scenarios import runner

        before = dict(os.environ)
        try:
            runner.quiet_fail_fast_mlflow()
            selected = runner.select(list(names) or None, scenarios_dir)
            endpoints = self.profile.status().endpoints  # as the CLI: a degraded stack still gets its results
            if endpoints is None:
                raise NotRunningError(f"no sandbox in {self.dir}", hint="start one with `sandbox up`")
            return runner.run_checklist(selected, endpoints, self.profile, run=ChecklistRun(), progress=False)
        finally:
            for key in set(os.environ) - set(before):
                del os.environ[key]
            os.environ.update(before)

    def clean_up(self) -> artifacts.RunArtifacts:
        """Remove everything this session made (names from `names`, MLflow entities with its tag).

        Its deployments first (a served model keeps its registry entry in use), then what the checklist's
        clean-up finds: registered models, experiments with their runs and artifacts, S3 keys, inference rows.
        """
        if "serving" in self.endpoints.capabilities:
            for status in self.serving.statuses():
                spec = self.serving.get(status.name) if self.names.owns(status.name) else None
                if spec is not None and spec.parent is None:  # a split's variants go with it
                    self.serving.undeploy(status.name)
        return artifacts.settle(self.endpoints, self.run.run_id)

    def problems(self) -> list[str]:
        """Each service and deployment that is not running: its state, what ran it, its detail, its last log
        lines. Empty when everything runs."""
        status = self.profile.status()
        found = [
            self._problem("service", svc.name, svc.state.value, svc.instance, svc.detail)
            for svc in status.services
            if svc.state not in (ServiceState.RUNNING, ServiceState.WAITING)  # waiting: starts on first use
        ]
        found += [
            self._problem("deployment", dep.name, dep.state, dep.instance, dep.detail)
            for dep in status.deployments
            if dep.state != "running"
        ]
        return found

    def report(self) -> str:
        """What a failed test's report says about the sandbox: what is not running, or that all is."""
        try:
            problems = self.problems()
        except Exception as exc:  # noqa: BLE001 - the report explains a failure; it must not add one
            return f"could not read the {self.profile.name} sandbox's status in {self.dir}: {exc}"
        if problems:
            return f"Not running in the {self.profile.name} sandbox at {self.dir}:\n" + "\n".join(problems)
        return f"Every service and deployment of the {self.profile.name} sandbox in {self.dir} is running."

    def _problem(self, kind: str, name: str, state: str, instance: str | None, detail: str) -> str:
        line = f"- {kind} {name}: {state}" + (f" ({instance})" if instance else "") + (f": {detail}" if detail else "")
        try:
            tail = "".join(self.profile.logs(name, lines=LOG_LINES)).rstrip()
        except (SandboxError, OSError):
            tail = ""  # no log for it (the remote profile keeps none)
        return line + ("".join(f"\n    | {text}" for text in tail.splitlines()) if tail else "")

    def down(self, *, purge: bool = True) -> None:
        """Take the sandbox down (``purge``: delete its folder and data), attached or not."""
        self.profile.down(purge=purge)


def open_profile(
    dir: str | Path | None, profile: str | None, config_file: str | Path | None = None, **overrides: Any
) -> Profile:
    """The profile `sandbox --profile P --dir D --config F` opens; ``overrides`` as flags, a section's keys
    given ``mlflow__port=5000`` (as SANDBOX_MLFLOW__PORT) or ``**{"mlflow.port": 5000}``."""
    flags = {key.replace("__", "."): value for key, value in overrides.items()}
    config = load_config(
        Path(config_file) if config_file else None,
        profile=profile,
        dir=Path(dir).expanduser() if dir else None,
        **flags,
    )
    return get_profile(config)


def start_sandbox(
    dir: str | Path,
    profile: str | None = "local",
    *,
    config_file: str | Path | None = None,
    keep: bool = False,
    **config_overrides: Any,
) -> SandboxHandle:
    """Bring a sandbox up in ``dir`` as `sandbox up` does (idempotent, under the sandbox's lock).

    A platform the sandbox does not own (remote: its `up` checks each endpoint) comes back ``attached``.
    A failure raises `SandboxUnavailableError` naming the failing part, its error and the fix; what this
    call started is undone unless ``keep``.
    """
    use_private_umask()  # as the CLI at its start: what the sandbox writes (here or in what it starts) is private
    prof = open_profile(dir, profile, config_file, **config_overrides)
    try:
        endpoints = prof.up(keep=keep)
    except SandboxError as exc:
        raise SandboxUnavailableError(
            f"the {prof.name} sandbox in {prof.config.root} did not come up: {exc.message}", exc
        ) from exc
    return SandboxHandle(prof, endpoints, attached=not endpoints.owned)


def attach_sandbox(
    dir: str | Path | None, profile: str | None = None, *, config_file: str | Path | None = None
) -> SandboxHandle:
    """The sandbox already running in ``dir`` (profile and settings as the CLI reads them); it stays up.

    A sandbox that is not running raises `SandboxUnavailableError` naming what is stopped.
    """
    use_private_umask()  # deployments and checklist runs write into the sandbox from this process
    prof = open_profile(dir, profile, config_file)
    try:
        endpoints = prof.endpoints()
    except SandboxError as exc:
        raise SandboxUnavailableError(
            f"cannot attach to the {prof.name} sandbox in {prof.config.root}: {exc.message}", exc
        ) from exc
    return SandboxHandle(prof, endpoints, attached=True)
