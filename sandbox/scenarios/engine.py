"""The scenario engine: discovery, capability checks, steps with timings, outcomes.

A scenario is a function decorated with `@scenario(...)` in a `.py` file under
`scenarios/` (or a folder given with `--scenarios-dir`). It receives a
`ScenarioContext` holding the stack's `Endpoints` and the profile's backends
(`ctx.serving`, `ctx.pipelines`, `ctx.scheduler`, each made when first used),
and never learns which profile runs the stack. It passes by
returning, fails by raising (`ctx.check` raises `ScenarioFailed`), and is
skipped only when the profile lacks a capability it declared.

The checklist runs on stacks people use: everything a scenario creates (MLflow
experiments and registered models, S3 keys, deployments, GPU namespaces) is
named with `SCENARIO_PREFIX`, made with `scenario_name()` or
`ScenarioContext.unique()`, and a scenario changes or deletes only what it
created. `ctx.serving` enforces that for deployments.

Each run of the checklist has an id (`ChecklistRun`). MLflow entities a scenario
makes carry it as the tag `RUN_ID_TAG` (`ctx.experiment`, `ctx.registered_model`,
and runs started with MLflow's fluent API, child processes included). On a
platform the sandbox does not own (`Endpoints.owned` False: the remote profile)
the names are per run too (`ctx.scenario_name`, `ctx.unique`), and after each
scenario what the run made is found by its id, tagged where a library left the
tag out, and deleted unless the run keeps its artifacts (`sandbox.scenarios.artifacts`).
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.endpoints import Endpoints, patched_environ
from sandbox.scenarios.names import RUN_ID_TAG, SCENARIO_PREFIX, is_scenario_name, scenario_name

if TYPE_CHECKING:
    from sandbox.pipelines.runner import PipelineRunner


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


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ScenarioFailed(AssertionError):
    """A checked expectation did not hold; the message is the reason in the report."""


@dataclass
class StepResult:
    name: str
    seconds: float
    ok: bool
    error: str = ""


@dataclass
class ScenarioResult:
    name: str
    title: str
    checklist: str
    outcome: Outcome
    reason: str = ""
    evidence: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""  # what the scenario printed, kept for the JUnit report
    attachments: dict[str, bytes] = field(default_factory=dict)  # file name -> content, written beside the report

    @property
    def error(self) -> str:
        """Why it failed (the failing step and its error); empty unless it failed."""
        return self.reason if self.outcome == Outcome.FAILED else ""

    def attachment_path(self, name: str) -> str:
        """Where the report folder keeps an attachment (relative to it)."""
        return f"attachments/{self.name}/{name}"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    checklist: str  # the production-checklist item it proves
    needs: tuple[str, ...]
    func: Callable[[ScenarioContext], None]
    source: str
    order: int = 100


class ScenarioServing:
    """The profile's serving backend as a scenario sees it.

    Deploying an existing name replaces that deployment, so a scenario may only
    deploy (or split, or undeploy) names with ``SCENARIO_PREFIX``; it remembers
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

    def deploy(self, name: str, *args, **kwargs):
        self._own(name)
        return self._backend.deploy(name, *args, **kwargs)

    def split(self, name: str, *args, **kwargs):
        self._own(name)
        return self._backend.split(name, *args, **kwargs)

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

        ``scenario_name(*parts)`` on the sandbox's own stack (the same name each run, as the README
        lists them); with the run's id appended on a platform the sandbox does not own, so a run
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
            self._result.steps.append(StepResult(name, time.monotonic() - started, False, _describe(exc)))
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
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.endpoints.mlflow_tracking_uri)

    def s3_problem(self) -> str | None:
        """None if the object store answers with the sandbox's keys, else what is wrong with it."""
        try:
            self.endpoints.minio_client().list_buckets()
        except Exception as exc:  # noqa: BLE001 - any failure is the diagnosis
            return f"S3 at {self.endpoints.s3_endpoint_url} failed: {_describe(exc)}"
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
        return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{id(self) % 10000:04d}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ScenarioFailed):
        return first
    return f"{type(exc).__name__}: {first}"[:500]


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Scenario] = {}


def scenario(
    name: str, *, title: str, checklist: str, needs: tuple[str, ...] | list[str] = (), order: int = 100
) -> Callable:
    """Register a scenario function under ``name``."""

    def register(func: Callable[[ScenarioContext], None]) -> Callable[[ScenarioContext], None]:
        source = getattr(sys.modules.get(func.__module__), "__file__", func.__module__)
        existing = _REGISTRY.get(name)
        if existing is not None and existing.source != source:
            raise ValueError(f"scenario {name!r} is defined twice: {existing.source} and {source}")
        _REGISTRY[name] = Scenario(name, title, checklist, tuple(needs), func, str(source), order)
        return func

    return register


def default_scenarios_dir() -> Path:
    """The project's `scenarios/` folder (next to the `sandbox` package)."""
    return Path(__file__).resolve().parents[2] / "scenarios"


def discover(extra_dirs: list[Path] | None = None) -> dict[str, Scenario]:
    """Import every scenario file; return the registry, ordered for the checklist."""
    for folder in [default_scenarios_dir(), *(extra_dirs or [])]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"sandbox_scenario_{path.parent.name}_{path.stem}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[1].order, item[0])))


# --------------------------------------------------------------------------- running


def run_scenario(
    item: Scenario,
    endpoints: Endpoints,
    serving_factory,
    scheduler_factory=None,
    *,
    run: ChecklistRun | None = None,
    pipelines_factory=None,
) -> ScenarioResult:
    """Run one scenario; ``run`` is the checklist run it belongs to (default: this process's, see `current_run`).

    ``serving_factory``, ``scheduler_factory`` and ``pipelines_factory`` make the profile's backends
    (`Profile.serving`, `.scheduler`, `.pipelines`) when a scenario first uses them.
    """
    run = run or current_run()
    result = ScenarioResult(item.name, item.title, item.checklist, Outcome.PASSED)
    missing = [need for need in item.needs if need not in endpoints.capabilities]
    if missing:
        result.outcome = Outcome.SKIPPED
        result.reason = skip_reason(endpoints, missing)
        return result
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"scenario-{item.name}-") as tmp:
        context = ScenarioContext(
            endpoints, serving_factory, Path(tmp), result, scheduler_factory, run, pipelines_factory=pipelines_factory
        )
        captured = io.StringIO()
        cwd = os.getcwd()
        try:
            # What a scenario's libraries print (KFP's task logs, MLflow's notices) is kept for the
            # report instead of interleaving with the checklist output.
            with (
                contextlib.redirect_stdout(captured),
                contextlib.redirect_stderr(captured),
                _quiet_loggers(),
                client_environment(endpoints, run),
            ):
                item.func(context)
        except Exception as exc:  # noqa: BLE001 - a broken stack fails the scenario, not the runner
            result.outcome = Outcome.FAILED
            failed_step = next((s.name for s in reversed(result.steps) if not s.ok), None)
            where = f"{failed_step}: " if failed_step else ""
            result.reason = where + _describe(exc)
            if not isinstance(exc, ScenarioFailed):
                result.evidence.append(
                    "traceback (last lines): " + " | ".join(traceback.format_exc().splitlines()[-4:])
                )
        finally:
            os.chdir(cwd)  # a scenario that changed directory must not move the next one
        if not endpoints.owned:
            _settle(context, result, endpoints, run, captured)
    result.seconds = time.monotonic() - started
    result.output = captured.getvalue()[-20000:]
    return result


def skip_reason(endpoints: Endpoints, missing: list[str]) -> str:
    """Why a scenario is skipped: the capabilities the stack lacks, each with what to configure to get it."""
    fixes = endpoints.capability_fixes
    parts = [f"{need} ({fixes[need]})" if need in fixes else need for need in missing]
    return f"the {endpoints.profile} profile lacks {', '.join(parts)}"


def _settle(context: ScenarioContext, result: ScenarioResult, endpoints: Endpoints, run, captured) -> None:
    """On a platform the sandbox does not own: tag what this run made, and delete it unless the run keeps it."""
    from sandbox.scenarios import artifacts

    verb = "tag (kept: keep_artifacts)" if run.keep_artifacts else "delete"
    title = f"{verb} what checklist run {run.run_id} made"
    try:
        with (
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
            _quiet_loggers(),
            client_environment(endpoints, run),
            context.step(title),
        ):
            found = artifacts.settle(endpoints, run.run_id, keep=run.keep_artifacts)
    except Exception as exc:  # noqa: BLE001 - what was left behind is a failure of this scenario
        problem = f"{title}: {_describe(exc)}"
        if result.outcome == Outcome.FAILED:
            result.evidence.append(f"clean-up failed too: {problem}")
        else:
            result.outcome, result.reason = Outcome.FAILED, problem
        return
    done = "kept" if run.keep_artifacts else "deleted"
    result.evidence.append(f"checklist run {run.run_id} ({RUN_ID_TAG}): {done} {found.summary()}")


@contextlib.contextmanager
def client_environment(endpoints: Endpoints, run: ChecklistRun) -> Iterator[None]:
    """MLflow's client settings for a scenario, in this process and the processes it starts (kfp.local).

    Runs started with MLflow's fluent API get the run's tag (``MLFLOW_RUN_CONTEXT``), and the
    client authenticates with the stack's credentials; the previous environment comes back after.
    """
    context = {RUN_ID_TAG: run.run_id}
    try:
        context = {**json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}"), **context}
    except ValueError:
        pass  # a user's malformed value: ours replaces it for the scenario
    settings = {"MLFLOW_RUN_CONTEXT": json.dumps(context), **endpoints.mlflow_auth_env()}
    with patched_environ(settings):
        yield


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    names = ("kfp", "mlflow", "urllib3", "dvc")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)
