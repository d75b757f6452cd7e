"""What a scenario is handed: `ScenarioContext` (endpoints, backends, steps, evidence) and the checklist run.

A scenario receives a `ScenarioContext` holding the stack's `Endpoints` and the profile's backends
(`ctx.serving`, `ctx.pipelines`, `ctx.scheduler`, each made when first used), and never learns which
profile runs the stack.

The checklist runs on stacks people use: everything a scenario creates (MLflow experiments and registered
models, S3 keys, deployments, GPU namespaces) is named with `SCENARIO_PREFIX`, made with `scenario_name()`
or `ScenarioContext.unique()`, and a scenario changes or deletes only what it created. `ctx.serving`
(`ScenarioServing`) enforces that for deployments.

Each run of the checklist has an id (`ChecklistRun`). MLflow entities a scenario makes carry it as the tag
`RUN_ID_TAG` (`ctx.experiment`, `ctx.registered_model`, and runs started with MLflow's fluent API, child
processes included). On a platform the sandbox does not own (`Endpoints.owned` False: the remote profile)
the names are per run too (`ctx.scenario_name`, `ctx.unique`).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.endpoints import Endpoints
from sandbox.scenarios.names import RUN_ID_TAG, SCENARIO_PREFIX, is_scenario_name, scenario_name
from sandbox.scenarios.results import ScenarioFailed, ScenarioResult, StepResult, describe_error

if TYPE_CHECKING:
    from sandbox.pipelines.runner import PipelineRunner
    from sandbox.serving.specs import DeploymentSpec


@dataclass
class ChecklistRun:
    """One run of the checklist: an id for everything it makes, and whether it keeps that afterwards.

    ``keep_artifacts`` matters on a platform the sandbox does not own (``Endpoints.owned`` False),
    where what a run made is deleted after each scenario unless it is set. On the sandbox's own
    stack nothing is deleted: the report links to the MLflow runs the scenarios made.
    """

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    keep_artifacts: bool = False


_process_run: ChecklistRun | None = None


def current_run() -> ChecklistRun:
    """The run of this process, for callers that name none: every scenario one command runs shares its id."""
    global _process_run
    if _process_run is None:
        _process_run = ChecklistRun()
    return _process_run


_unique_numbers = itertools.count(1)


class ScenarioServing:
    """The profile's serving backend as a scenario sees it.

    Deploying an existing name replaces that deployment, so a scenario may only
    deploy (a model or a split) and undeploy names with ``SCENARIO_PREFIX``; it remembers
    what it deployed, which is all ``ScenarioContext.remove_deployments`` removes.
    Everything else (records, inference endpoints, ...) is the backend's.
    """

    def __init__(self, backend):
        self._backend = backend
        self.deployed: list[str] = []

    def _own(self, name: str) -> None:
        if not is_scenario_name(name):
            raise ScenarioFailed(
                f"a scenario may only deploy names starting with {SCENARIO_PREFIX!r} (got {name!r}): "
                "deploying an existing name would replace someone else's deployment"
            )
        if name not in self.deployed:
            self.deployed.append(name)  # before the call: a half-made deployment is cleaned up too

    def deploy(self, spec: DeploymentSpec) -> list[str]:
        """Serve ``spec`` (`DeploymentSpec.model(...)` or `DeploymentSpec.split(...)`) under a scenario's name."""
        self._own(spec.name)
        return self._backend.deploy(spec)

    def expect(self, name: str) -> None:
        """A deployment that another process of this scenario (a notebook's kernel) makes under ``name``.

        The name must have the prefix, as for `deploy`; `remove_deployments` then removes it.
        """
        self._own(name)

    def undeploy(self, name: str):
        if name not in self.deployed:
            raise ScenarioFailed(f"a scenario may only undeploy what it deployed; {name!r} is not its own")
        return self._backend.undeploy(name)

    def __getattr__(self, attribute: str):
        return getattr(self._backend, attribute)


class ScenarioContext:
    """What a scenario gets: the stack's endpoints, serving, a work folder, and reporting helpers."""

    def __init__(
        self,
        endpoints: Endpoints,
        serving_factory,
        workdir: Path,
        result: ScenarioResult,
        scheduler_factory=None,
        run: ChecklistRun | None = None,
        pipelines_factory=None,
    ):
        self.endpoints = endpoints
        self._serving_factory = serving_factory
        self._serving: ScenarioServing | None = None
        self._scheduler_factory = scheduler_factory
        self._pipelines_factory = pipelines_factory
        self._pipelines = None
        self.workdir = workdir
        self._result = result
        self.run = run or current_run()

    @property
    def per_run_names(self) -> bool:
        """Names carry the run's id: on a platform the sandbox does not own, where each run deletes what it made."""
        return self.endpoints is not None and not self.endpoints.owned

    @property
    def tags(self) -> dict[str, str]:
        """MLflow tags for whatever this scenario creates: the checklist run's id."""
        return {RUN_ID_TAG: self.run.run_id}

    def has(self, capability: str) -> bool:
        """Whether the stack offers ``capability`` (for a step a scenario can do without, e.g. deploying)."""
        return capability in self.endpoints.capabilities

    def lacks(self, capability: str) -> str:
        """Why a step needing ``capability`` is left out here: what to configure to get it."""
        fix = self.endpoints.capability_fixes.get(capability)
        return f"the {self.endpoints.profile} profile lacks {capability}" + (f" ({fix})" if fix else "")

    def scenario_name(self, *parts: str) -> str:
        """The name of something this scenario creates under a fixed name.

        ``scenario_name(*parts)`` on the sandbox's own stack (the same name each run, as
        docs/checklist.md lists them); with the run's id appended on a platform the sandbox does not own, so a run
        never writes into what another run (or person) made, and deletes all it made.
        """
        return scenario_name(*parts, self.run.run_id) if self.per_run_names else scenario_name(*parts)

    def experiment(self, name: str) -> str:
        """The id of MLflow experiment ``name`` (prefixed), created with this run's tag.

        It may already exist on the sandbox's own stack (fixed names are reused) and then gets
        this run's tag; on a platform the sandbox does not own, an existing one that is not this
        run's is refused.
        """
        client = self.mlflow_client()
        existing = client.get_experiment_by_name(name)
        if existing is None:
            return client.create_experiment(name, tags=self.tags)
        self._reuse("experiment", name, existing.tags)
        client.set_experiment_tag(existing.experiment_id, RUN_ID_TAG, self.run.run_id)
        return existing.experiment_id

    def registered_model(self, name: str) -> str:
        """Registered model ``name`` (prefixed), created with this run's tag; reused as `experiment` says."""
        from mlflow.exceptions import MlflowException

        client = self.mlflow_client()
        try:
            existing = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(name, tags=self.tags)
            return name
        self._reuse("registered model", name, existing.tags)
        client.set_registered_model_tag(name, RUN_ID_TAG, self.run.run_id)
        return name

    def _reuse(self, what: str, name: str, tags: dict) -> None:
        if not is_scenario_name(name):
            raise ScenarioFailed(f"a scenario may only create {what}s named {SCENARIO_PREFIX!r}… (got {name!r})")
        if self.per_run_names and tags.get(RUN_ID_TAG) != self.run.run_id:
            raise ScenarioFailed(
                f"the {what} {name!r} already exists and is not this run's ({RUN_ID_TAG}="
                f"{tags.get(RUN_ID_TAG)!r}): on a platform the sandbox does not own the checklist "
                "writes only into what it created"
            )

    @property
    def serving(self) -> ScenarioServing:
        """The profile's serving backend (deploy, split, undeploy), made when first used.

        Only names with ``SCENARIO_PREFIX`` may be deployed through it (see `ScenarioServing`).
        """
        if self._serving is None:
            self._serving = ScenarioServing(self._serving_factory())
        return self._serving

    def remove_deployments(self, *names: str) -> None:
        """Undeploy whichever of ``names`` this scenario deployed and still exist.

        A scenario's clean-up, safe after a partial start; a name the scenario did
        not deploy through ``ctx.serving`` is left alone, whoever owns it.
        """
        if self._serving is None:
            return  # nothing was deployed
        ours = [name for name in names if name in self._serving.deployed]
        if not ours:
            return
        for name in ours:
            if self._serving.get(name) is not None:
                self._serving.undeploy(name)

    @property
    def scheduler(self):
        """The profile's GPU scheduling and quota backend."""
        if self._scheduler_factory is None:
            raise ScenarioFailed("this runner gave the scenario no scheduler")
        return self._scheduler_factory()

    @property
    def pipelines(self) -> PipelineRunner:
        """The profile's pipeline runner (sandbox.pipelines.runner), made when first used."""
        if self._pipelines is None:
            if self._pipelines_factory is None:
                raise ScenarioFailed("this runner gave the scenario no pipeline runner")
            self._pipelines = self._pipelines_factory()
        return self._pipelines

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self._result.steps.append(StepResult(name, time.monotonic() - started, False, describe_error(exc)))
            raise
        self._result.steps.append(StepResult(name, time.monotonic() - started, True))

    def check(self, condition: object, message: str) -> None:
        if not condition:
            raise ScenarioFailed(message)

    def evidence(self, line: str) -> None:
        self._result.evidence.append(line)

    def link(self, label: str, url: str) -> None:
        self._result.links[label] = url

    def attach(self, name: str, content: bytes | str) -> None:
        """A file for the report (an executed notebook, say): `--report DIR` writes it under DIR/attachments/."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"an attachment's name is a plain file name, not {name!r}")
        self._result.attachments[name] = content.encode() if isinstance(content, str) else content

    def mlflow_run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.endpoints.mlflow_tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"

    def mlflow_client(self):
        return self.endpoints.mlflow_client()

    def s3_problem(self) -> str | None:
        """None if the object store answers with the sandbox's keys, else what is wrong with it."""
        try:
            self.endpoints.minio_client().list_buckets()
        except Exception as exc:  # noqa: BLE001 - any failure is the diagnosis
            return f"S3 at {self.endpoints.s3_endpoint_url} failed: {describe_error(exc)}"
        return None

    def unique(self, name: str) -> str:
        """A name for this run only, with ``SCENARIO_PREFIX``: ``checklist-NAME-YYYYmmdd-HHMMSS-NNNN``.

        A DNS-1123 label when ``name`` is one; 31 characters longer than ``name``
        (a namespace, at most 63, leaves ``name`` 32). On a platform the sandbox does not
        own, the run's id instead of the time: ``checklist-NAME-RUNID-NNNN``.
        """
        stem = name if is_scenario_name(name) else scenario_name(name)
        if self.per_run_names:
            return f"{stem}-{self.run.run_id}-{next(_unique_numbers) % 10000:04d}"
        # Random, not a counter: scenarios running side by side are forked processes sharing one counter's state.
        return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.randbelow(10000):04d}"
