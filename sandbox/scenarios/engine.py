"""The scenario engine: discovery, capability checks, steps with timings, outcomes.

A scenario is a function decorated with `@scenario(...)` in a `.py` file under
`scenarios/` (or a folder given with `--scenarios-dir`). It receives a
`ScenarioContext` holding the stack's `Endpoints` and the profile's serving
backend, and never learns which profile runs the stack. It passes by
returning, fails by raising (`ctx.check` raises `ScenarioFailed`), and is
skipped only when the profile lacks a capability it declared.

The checklist runs on stacks people use: everything a scenario creates (MLflow
experiments and registered models, S3 keys, deployments, GPU namespaces) is
named with `SCENARIO_PREFIX`, made with `scenario_name()` or
`ScenarioContext.unique()`, and a scenario changes or deletes only what it
created. `ctx.serving` enforces that for deployments.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.endpoints import Endpoints

SCENARIO_PREFIX = "checklist-"
"""The one prefix of every name a scenario gives what it creates; a user's names never start with it."""


def scenario_name(*parts: str) -> str:
    """A name of the checklist's own: ``SCENARIO_PREFIX`` then ``parts`` joined with '-'.

    Kept a DNS-1123 label when the parts are (lower case, digits, '-'), so it
    also fits deployments and namespaces.
    """
    if not parts or not all(parts):
        raise ValueError("a scenario name needs at least one non-empty part")
    return SCENARIO_PREFIX + "-".join(parts)


def is_scenario_name(name: str) -> bool:
    """Whether ``name`` is one the checklist may create, change or delete."""
    return name.startswith(SCENARIO_PREFIX) and len(name) > len(SCENARIO_PREFIX)


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

    def undeploy(self, name: str):
        if name not in self.deployed:
            raise ScenarioFailed(f"a scenario may only undeploy what it deployed; {name!r} is not its own")
        return self._backend.undeploy(name)

    def __getattr__(self, attribute: str):
        return getattr(self._backend, attribute)


class ScenarioContext:
    """What a scenario gets: the stack's endpoints, serving, a work folder, and reporting helpers."""

    def __init__(
        self, endpoints: Endpoints, serving_factory, workdir: Path, result: ScenarioResult, scheduler_factory=None
    ):
        self.endpoints = endpoints
        self._serving_factory = serving_factory
        self._serving: ScenarioServing | None = None
        self._scheduler_factory = scheduler_factory
        self.workdir = workdir
        self._result = result

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
        records = self._serving.records()
        for name in ours:
            if name in records:
                self._serving.undeploy(name)

    @property
    def scheduler(self):
        """The profile's GPU scheduling and quota backend."""
        if self._scheduler_factory is None:
            raise ScenarioFailed("this runner gave the scenario no scheduler")
        return self._scheduler_factory()

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
        (a namespace, at most 63, leaves ``name`` 32).
        """
        stem = name if is_scenario_name(name) else scenario_name(name)
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


def run_scenario(item: Scenario, endpoints: Endpoints, serving_factory, scheduler_factory=None) -> ScenarioResult:
    result = ScenarioResult(item.name, item.title, item.checklist, Outcome.PASSED)
    missing = [need for need in item.needs if need not in endpoints.capabilities]
    if missing:
        result.outcome = Outcome.SKIPPED
        result.reason = f"the {endpoints.profile} profile lacks {', '.join(missing)}"
        return result
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"scenario-{item.name}-") as tmp:
        context = ScenarioContext(endpoints, serving_factory, Path(tmp), result, scheduler_factory)
        captured = io.StringIO()
        cwd = os.getcwd()
        try:
            # What a scenario's libraries print (KFP's task logs, MLflow's notices) is kept for the
            # report instead of interleaving with the checklist output.
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), _quiet_loggers():
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
    result.seconds = time.monotonic() - started
    result.output = captured.getvalue()[-20000:]
    return result


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
