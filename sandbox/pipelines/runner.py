"""Pipeline runners: run a KFP pipeline with arguments and say how it went.

`PipelineRunner` is the profile-neutral backend (`Profile.pipelines()`): `run`
takes a pipeline (a ``@dsl.pipeline`` function, or the path of a package KFP's
compiler wrote) and its arguments, and returns a `PipelineOutcome`: succeeded
or failed, the pipeline's outputs, the MLflow runs it made, and where its log
is (with the last lines when it failed). ``image`` is what the runner's
components run on; callers build or compile pipelines for it.

`LocalPipelineRunner` runs with `kfp.local`'s subprocess runner: each step is
a subprocess of this Python (no cluster, no Docker), so it builds for
``LOCAL`` and runs a package compiled for any image the same way. The steps
reach MLflow and S3 through the endpoints it is given (the local profile's
own, or a remote platform's), by environment variables, so no credential is a
pipeline parameter. The MLflow runs a pipeline made are found by a tag
(`PIPELINE_RUN_TAG`) that every run started with MLflow's fluent API in its
steps gets from ``MLFLOW_RUN_CONTEXT``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sandbox.endpoints import Endpoints, patched_environ
from sandbox.errors import SandboxError
from sandbox.files import tail
from sandbox.pipelines.config import LOCAL, PipelinesConfig
from sandbox.pipelines.warm import WarmSteps, as_step_python

logger = logging.getLogger("sandbox.pipelines")

PIPELINE_RUN_TAG = "sandbox.pipeline.run_id"
"""The MLflow tag on every run a pipeline's steps start with MLflow's fluent API: the pipeline run's id."""

TAIL_LINES = 30


class PipelineState(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class PipelineOutcome:
    """How one pipeline run went; the same for every runner."""

    pipeline: str
    run_id: str  # the runner's id of this run (the tag value on its MLflow runs)
    state: PipelineState
    outputs: dict[str, Any] = field(default_factory=dict)
    mlflow_run_ids: list[str] = field(default_factory=list)  # in the order they started
    log: str | None = None  # where the whole log is: a file, or a URL
    log_tail: str = ""  # its last lines, when the run failed
    error: str = ""
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.state == PipelineState.SUCCEEDED

    def describe(self) -> str:
        """One line: the pipeline, its state, and why it failed."""
        line = f"pipeline {self.pipeline} (run {self.run_id}) {self.state.value} in {self.seconds:.1f}s"
        if not self.succeeded:
            line += f": {self.error}" if self.error else ""
            line += f"; log: {self.log}" if self.log else ""
        return line

    def raise_for_state(self) -> PipelineOutcome:
        """This outcome if it succeeded; else `PipelineFailed` with the log's location and its last lines."""
        if not self.succeeded:
            raise PipelineFailed(
                f"the pipeline {self.pipeline} failed: {self.error or 'no reason given'}",
                hint=f"see {self.log}" if self.log else "see the pipeline's log",
                details=self.log_tail or None,
            )
        return self


class PipelineFailed(SandboxError):
    """A pipeline run ended in failure."""


@runtime_checkable
class PipelineRunner(Protocol):
    """A profile's pipeline backend."""

    @property
    def image(self) -> PipelinesConfig:
        """What this runner's components run on: build or compile pipelines for it."""
        ...

    def run(self, pipeline: Any, arguments: Mapping[str, Any]) -> PipelineOutcome:
        """Run ``pipeline`` (a ``@dsl.pipeline`` function, or a compiled package's path) with ``arguments``."""
        ...


# --------------------------------------------------------------------------- kfp.local

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOCAL_LOCK = threading.Lock()  # kfp.local's configuration, the environment and fds 1 and 2 are the process's


class LocalPipelineRunner:
    """Runs pipelines with `kfp.local`'s subprocess runner against the given endpoints' MLflow and S3.

    ``root``: each run gets a folder there (``<pipeline>-<time>-<id>/``: ``pipeline.log`` and KFP's
    artifacts in ``kfp-root/``), kept. None: a temporary folder per run, deleted when the run succeeds
    and kept, for its log, when it fails.
    """

    def __init__(self, endpoints: Endpoints, root: Path | None = None):
        self.endpoints = endpoints
        self.root = root
        self._warm: WarmSteps | None = None

    @property
    def image(self) -> PipelinesConfig:
        return LOCAL

    def run(self, pipeline: Any, arguments: Mapping[str, Any]) -> PipelineOutcome:
        component = _load(pipeline)
        name = component.name
        run_id = uuid.uuid4().hex[:12]
        folder = self._folder(name, run_id)
        try:
            log = folder / "pipeline.log"
            started = time.monotonic()
            outcome = PipelineOutcome(name, run_id, PipelineState.SUCCEEDED, log=str(log))
            with _LOCAL_LOCK, self._environment(run_id, folder):
                warm = self._warm_steps()
                try:
                    with _output_to(log), _local_session(folder / "kfp-root"), as_step_python(warm, folder):
                        logger.info("running pipeline %s (run %s) with kfp.local; log: %s", name, run_id, log)
                        task = component(**dict(arguments))
                    outcome.outputs = _outputs(task)
                except RuntimeError as exc:  # kfp.local: "Pipeline NAME finished with status FAILURE. Inner task ..."
                    outcome.state = PipelineState.FAILED
                    outcome.error = _ANSI.sub("", str(exc)).strip()
                    outcome.log_tail = _ANSI.sub("", tail(log, TAIL_LINES))
                outcome.seconds = time.monotonic() - started
                outcome.mlflow_run_ids = pipeline_mlflow_runs(self.endpoints, run_id, quiet=not outcome.succeeded)
        except BaseException:
            # No outcome names the folder (an interrupt, an error outside the run itself): a temporary one goes.
            if self.root is None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if outcome.succeeded and self.root is None:
            shutil.rmtree(folder, ignore_errors=True)
            outcome.log = None
        logger.info("%s", outcome.describe())
        return outcome

    def close(self) -> None:
        """Stop the warm interpreter now (it would end on its own with this process, or after a minute idle)."""
        if self._warm is not None:
            self._warm.stop()
            self._warm = None

    def _warm_steps(self) -> WarmSteps | None:
        """This runner's warm interpreter (`sandbox.pipelines.warm`), started with its first run and kept for the
        next ones; none for a runner without a folder of its own (nowhere to keep it between runs)."""
        if self.root is None:
            return None
        if self._warm is None or not self._warm.alive():
            self._warm = WarmSteps.start(self.root / f".warm-{os.getpid()}")
        return self._warm

    def _folder(self, name: str, run_id: str) -> Path:
        if self.root is None:
            return Path(tempfile.mkdtemp(prefix=f"sandbox-pipeline-{name}-"))
        folder = self.root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextlib.contextmanager
    def _environment(self, run_id: str, folder: Path) -> Iterator[None]:
        """What the steps (subprocesses) read: MLflow's URI, credentials and run tags, S3's endpoint and keys,
        and a temporary folder inside the run's: each KFP step writes its code to `mktemp -d` and never removes
        it, so outside the run's folder every step would leave one in /tmp."""
        endpoints = self.endpoints
        scratch = folder / "tmp"
        scratch.mkdir(mode=0o700, exist_ok=True)
        tempfile.gettempdir()  # fixed now: this process's own temporary files stay where they were
        try:
            context = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
        except ValueError:
            context = {}
        settings = {
            "MLFLOW_RUN_CONTEXT": json.dumps({**context, PIPELINE_RUN_TAG: run_id}),
            "MLFLOW_TRACKING_URI": endpoints.mlflow_tracking_uri,
            **endpoints.mlflow_auth_env(),
            "TMPDIR": str(scratch),
        }
        if endpoints.s3_endpoint_url:
            settings.update(
                {
                    "AWS_ENDPOINT_URL_S3": endpoints.s3_endpoint_url,
                    "MLFLOW_S3_ENDPOINT_URL": endpoints.s3_endpoint_url,
                    "AWS_ACCESS_KEY_ID": endpoints.s3_access_key,
                    "AWS_SECRET_ACCESS_KEY": endpoints.s3_secret_key,
                    "AWS_DEFAULT_REGION": endpoints.s3_region,
                }
            )
        settings = {key: value for key, value in settings.items() if value}
        with patched_environ(settings):
            yield


def pipeline_mlflow_runs(endpoints: Endpoints, run_id: str, *, quiet: bool) -> list[str]:
    """The MLflow runs the steps of pipeline run ``run_id`` made (tagged with it), in the order they started;
    ``quiet`` (a failed run, whose outcome is the failure, not this search): a search error is logged, not raised."""
    if not endpoints.mlflow_tracking_uri:
        return []
    try:
        return mlflow_runs_tagged(endpoints.mlflow_client(), PIPELINE_RUN_TAG, run_id)
    except Exception as exc:
        if not quiet:
            raise
        logger.warning("could not list the MLflow runs of pipeline run %s: %s", run_id, exc)
        return []


def mlflow_runs_tagged(client, tag: str, value: str) -> list[str]:
    """Ids of the active MLflow runs (in any experiment) whose tag ``tag`` is ``value``, oldest first."""
    from mlflow.entities import ViewType

    experiment_ids = [e.experiment_id for e in search_all(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)]
    runs = []
    for start in range(0, len(experiment_ids), 100):
        runs += search_all(
            client.search_runs,
            experiment_ids=experiment_ids[start : start + 100],
            filter_string=f"tags.`{tag}` = '{value}'",
            run_view_type=ViewType.ACTIVE_ONLY,
        )
    return [run.info.run_id for run in sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))]


def search_all(search, **kwargs) -> list:
    """Every page of an MLflow client search, as one list."""
    found, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _load(pipeline: Any):
    """A runnable KFP component: the pipeline function itself, or the package at a path loaded with KFP."""
    if isinstance(pipeline, str | os.PathLike):
        from kfp import components

        path = Path(pipeline)
        if not path.is_file():
            raise FileNotFoundError(f"no compiled pipeline at {path}")
        return components.load_component_from_file(str(path))
    if not hasattr(pipeline, "component_spec"):
        raise TypeError(f"not a KFP pipeline or a compiled package's path: {pipeline!r}")
    return pipeline


def _outputs(task) -> dict[str, Any]:
    """A finished local task's outputs: parameters as they are, artifacts as their URI."""
    outputs = getattr(task, "outputs", None) or {}
    return {name: getattr(value, "uri", value) for name, value in outputs.items()}


@contextlib.contextmanager
def _local_session(pipeline_root: Path) -> Iterator[None]:
    """kfp.local set up for one run (subprocesses of this Python), and unset after it."""
    from kfp import local
    from kfp.local import config

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    try:
        with warnings.catch_warnings():
            # A package compiled for a cluster's image runs here all the same: its steps run with this Python.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            yield
    finally:
        config.LocalExecutionConfig.instance = None


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Everything printed meanwhile, by this process (Python or not) or its children, goes to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("a", buffering=1, errors="replace") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            # kfp.local prints its steps' output with print() and logs to sys.stdout: Python's streams too.
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            handle.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
