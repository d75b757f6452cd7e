"""`KfpPipelineRunner`: the kind and cluster profiles' pipeline backend, on the cluster's Kubeflow Pipelines.

The same compiled pipeline `kfp.local` runs locally (sandbox.pipelines.runner) is submitted with
`kfp.Client` to KFP's API server (`svc/ml-pipeline` 8888 in namespace `kubeflow`), reached on
127.0.0.1 the way the profile's reach strategy says (`kube/reach.py`: kind's mapping of a NodePort, or a
`kubectl port-forward` the sandbox keeps, `kube/forwards/kfp.pid`). Before it is
sent, the pipeline spec (KFP's IR) gets what the local runner puts in the steps' environment:

- every container executor's ``env``: the in-cluster MLflow tracking URI and S3 endpoint, the region,
  and ``MLFLOW_RUN_CONTEXT`` carrying `PIPELINE_RUN_TAG` = this run's id (generated here: KFP's own
  run id exists only after submission), merged with any context this process has (the checklist's tag);
- the platform spec (`platforms.kubernetes.deploymentSpec.executors.<exec>`, kfp-kubernetes's
  format): ``secretAsEnv`` naming the S3 keys in the Secret `PIPELINES_S3_SECRET` (KFP runs the
  steps in its own namespace, so the runner applies that Secret there, labelled with the stack's
  instance: `down` deletes it) and ``imagePullPolicy: IfNotPresent`` (kind loads the image; nothing
  pulls it). No secret value is ever in the spec.
- one more task, `OUTPUTS_TASK`, fed the pipeline's outputs: KFP's run API (v2beta1 `run_details`)
  gives a task's outputs only as metadata-store artifact ids, never parameter values, so this task
  prints them (with artifacts as their URIs) as one JSON line that the runner reads from its pod's log.

Arguments equal to the host's MLflow URI (127.0.0.1:PORT, which a pod cannot reach) are sent as the
in-cluster one: the training pipeline takes its tracking URI as a parameter. The outcome is the same
`PipelineOutcome` as locally: SUCCEEDED or FAILED (KFP's FAILED, CANCELED, SKIPPED, or no end before
the timeout, each with its reason), outputs, the MLflow runs tagged with the run's id (searched through
the host's MLflow), ``log`` = the run's URL on KFP's API, and, when it failed, the failed step's last
log lines (`kubectl logs` of its pod: `pipeline/runid=<KFP run id>` labels every pod of a run, and
Argo's `workflows.argoproj.io/node-name` annotation names its task). KFP's own task details are not
used for this: they list Argo's nodes (a step is a DAG node `<task>` around a pod node `executor`).

Compared with kfp.local: an output artifact comes back as its URI in KFP's own object store
(`minio://mlpipeline/v2/artifacts/...`), which the host does not reach, not as a local file; the
outputs are read from a pod's log, so they need kubectl and the pod still there (KFP's persistence
agent lets a finished workflow go after TTL_SECONDS_AFTER_WORKFLOW_FINISH, 86400 s in its manifests;
an Argo pod-GC policy, if a cluster sets one, would delete the pod sooner: not checked here); no
log of a run is kept on the host (``log`` is the run's URL; ``log_tail`` only for a failure); every
run adds one small step (`OUTPUTS_TASK`) to the run KFP shows; and KFP's driver and launcher images
are pulled by the cluster on first use.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sandbox.endpoints import Endpoints
from sandbox.errors import NotRunningError, ServiceStartError
from sandbox.pipelines.config import PipelinesConfig
from sandbox.pipelines.runner import (
    PIPELINE_RUN_TAG,
    TAIL_LINES,
    PipelineOutcome,
    PipelineState,
    pipeline_mlflow_runs,
)
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import KFP, MLFLOW, REGION, S3, StackSpec, labels
from sandbox.profiles.kube.tools import ToolError, Tools

logger = logging.getLogger("sandbox.pipelines")

PIPELINES_S3_SECRET = "ml-sandbox-pipelines-s3"
"""The stack's S3 keys and MLflow password, in KFP's namespace (where the steps run): the runner applies it before
each run."""
S3_KEY_TO_ENV = {
    "access-key": "AWS_ACCESS_KEY_ID",
    "secret-key": "AWS_SECRET_ACCESS_KEY",
    "mlflow-password": "MLFLOW_TRACKING_PASSWORD",  # MLflow's basic-auth admin; the user is a plain variable
}
OUTPUTS_TASK = "sandbox-outputs"
OUTPUTS_MARKER = "SANDBOX_PIPELINE_OUTPUTS "
RUN_ID_LABEL = "pipeline/runid"  # KFP's label on every pod of a run
MAIN_CONTAINER = "main"  # the step's own container in a KFP (Argo) pod
NODE_NAME = "workflows.argoproj.io/node-name"  # Argo's annotation on each pod: `<workflow>.root.<task>.executor`
EXPERIMENT = "ml-sandbox"  # the KFP experiment the sandbox's runs go to
DEFAULT_TIMEOUT_S = 1800.0  # the first run pulls KFP's driver and launcher images
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
# Every value KFP's 2.17 API gives `V2beta1RuntimeState`: those not in FINAL are still running.
RUNNING = {"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "CANCELING", "PAUSED"}

# The outputs task's program (python3 is in the project's image and in any Python image): KFP's
# launcher replaces `{{$}}` with the executor input, whose inputs are the pipeline's outputs.
_OUTPUTS_PROGRAM = f"""\
import json, sys
inputs = json.loads(sys.argv[1]).get("inputs", {{}})
values = dict(inputs.get("parameterValues", {{}}))
for name, listed in inputs.get("artifacts", {{}}).items():
    items = listed.get("artifacts", [])
    values[name] = items[0].get("uri") if items else None
print({OUTPUTS_MARKER!r} + json.dumps(values, sort_keys=True), flush=True)
"""


def pipelines_secret(spec: StackSpec) -> dict[str, Any]:
    """The Secret the steps read the stack's S3 keys from, in KFP's namespace, with the stack's labels."""
    data = {
        "access-key": spec.secrets.s3_access_key,
        "secret-key": spec.secrets.s3_secret_key,
        "mlflow-password": spec.secrets.mlflow_admin_password,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": PIPELINES_S3_SECRET,
            "namespace": versions.KFP_NAMESPACE,
            "labels": labels(spec, KFP),
        },
        "type": "Opaque",
        "stringData": data,
    }


class KfpPipelineRunner:
    """Runs pipelines on the cluster's KFP, its steps in ``image`` against the stack's MLflow and S3.

    ``api``: KFP's API base URL on 127.0.0.1 (a callable: the cluster profile makes sure its forward
    runs first); ``reach``: how it is reached, for the error when it does not answer; ``spec``: the
    stack (in-cluster URLs, the S3 keys for the Secret, labels); ``endpoints``: the host's view of
    the stack (the MLflow runs are searched there).
    """

    def __init__(
        self,
        *,
        api: Callable[[], str],
        image: PipelinesConfig,
        spec: StackSpec,
        tools: Tools,
        endpoints: Endpoints,
        reach: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        poll_s: float = 5.0,
    ):
        self._api = api
        self._image = image
        self.spec = spec
        self.tools = tools
        self.endpoints = endpoints
        self.reach = reach
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    @property
    def image(self) -> PipelinesConfig:
        return self._image

    # ------------------------------------------------------------------ the spec

    def step_environment(self, run_id: str) -> dict[str, str]:
        """The plain (non-secret) variables every step gets."""
        try:
            context = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
        except ValueError:
            context = {}
        s3 = self.spec.url(S3)
        return {
            "MLFLOW_TRACKING_URI": self.spec.url(MLFLOW),
            "MLFLOW_TRACKING_USERNAME": self.spec.secrets.MLFLOW_ADMIN_USER,
            "MLFLOW_S3_ENDPOINT_URL": s3,
            "AWS_ENDPOINT_URL_S3": s3,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_RUN_CONTEXT": json.dumps({**context, PIPELINE_RUN_TAG: run_id}),
        }

    def prepare(self, pipeline: Any, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pipeline spec and platform spec to submit for ``pipeline`` (a function or a package's path)."""
        pipeline_spec, platform_spec = load_package(pipeline)
        executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
        kubernetes = (
            platform_spec.setdefault("platforms", {})
            .setdefault("kubernetes", {})
            .setdefault("deploymentSpec", {})
            .setdefault("executors", {})
        )
        environment = self.step_environment(run_id)
        for label, executor in executors.items():
            container = executor.get("container")
            if container is None:  # an importer or resolver: no step container of ours
                continue
            if container.get("image") != self._image.base_image:
                logger.warning(
                    "step %s runs in %s, not in this runner's image %s: build the pipeline for `runner.image` "
                    "(sandbox.pipelines.training.build(runner.image)) or its packages may be missing there",
                    label,
                    container.get("image"),
                    self._image.base_image,
                )
            env = [item for item in container.get("env", []) if item.get("name") not in environment]
            container["env"] = env + [{"name": name, "value": value} for name, value in environment.items()]
            config = kubernetes.setdefault(label, {})
            config.setdefault("secretAsEnv", []).append(
                {
                    "secretName": PIPELINES_S3_SECRET,
                    "secretNameParameter": {"runtimeValue": {"constant": PIPELINES_S3_SECRET}},
                    "keyToEnv": [{"secretKey": key, "envVar": var} for key, var in S3_KEY_TO_ENV.items()],
                    "optional": False,
                }
            )
            config.setdefault("imagePullPolicy", "IfNotPresent")
        add_outputs_task(pipeline_spec, self._image.base_image)
        if not kubernetes:
            platform_spec = {}
        return pipeline_spec, platform_spec

    def arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as the steps need them: the host's MLflow URI becomes the in-cluster one."""
        host = (self.endpoints.mlflow_tracking_uri or "").rstrip("/")
        inside = self.spec.url(MLFLOW)
        out = {}
        for name, value in arguments.items():
            if host and isinstance(value, str) and value.rstrip("/") == host:
                logger.info("pipeline argument %s: %s is the host's MLflow; the steps get %s", name, value, inside)
                value = inside
            out[name] = value
        return out

    # ------------------------------------------------------------------ a run

    def run(self, pipeline: Any, arguments: Mapping[str, Any]) -> PipelineOutcome:
        run_id = uuid.uuid4().hex[:12]
        pipeline_spec, platform_spec = self.prepare(pipeline, run_id)
        name = pipeline_spec.get("pipelineInfo", {}).get("name", "pipeline")
        api = self._api().rstrip("/")
        self._check_api(api)
        self.tools.run(self.tools.apply([pipelines_secret(self.spec)]))
        started = time.monotonic()
        outcome = PipelineOutcome(name, run_id, PipelineState.FAILED)
        client = self._client(api)
        with tempfile.TemporaryDirectory(prefix="sandbox-kfp-") as folder, _api_errors(api, self.reach):
            package = Path(folder) / "pipeline.yaml"
            documents = [pipeline_spec, platform_spec] if platform_spec else [pipeline_spec]
            package.write_text(yaml.safe_dump_all(documents, sort_keys=False))
            with _quiet_client():
                submitted = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=self.arguments(arguments),
                    run_name=f"{name} {run_id}",
                    experiment_name=EXPERIMENT,
                )
        kfp_run = submitted.run_id
        outcome.log = f"{api}/apis/v2beta1/runs/{kfp_run}"
        logger.info("pipeline %s (run %s) submitted to KFP as run %s: %s", name, run_id, kfp_run, outcome.log)
        with _api_errors(api, self.reach):
            run = self._wait(client, kfp_run, outcome)
        if run is not None:
            state = str(run.state or "").upper()
            if state == "SUCCEEDED":
                self._read_outputs(run, kfp_run, pipeline_spec, outcome)
            else:
                outcome.error = _failure(run, state)
                outcome.log_tail = self._failed_log(run, kfp_run)
        outcome.seconds = time.monotonic() - started
        outcome.mlflow_run_ids = pipeline_mlflow_runs(self.endpoints, run_id, quiet=not outcome.succeeded)
        logger.info("%s", outcome.describe())
        return outcome

    def _client(self, api: str):
        import kfp

        with _quiet_client():
            return kfp.Client(host=api)

    def _check_api(self, api: str) -> None:
        """KFP's health endpoint answers, or a clear error saying how it is reached (kfp.Client retries for 25s)."""
        import httpx

        url = f"{api}/apis/v2beta1/healthz"
        try:
            httpx.get(url, timeout=10).raise_for_status()
        except httpx.HTTPError as exc:
            raise NotRunningError(
                f"Kubeflow Pipelines' API does not answer at {url}: {exc}",
                hint=(self.reach + "; " if self.reach else "")
                + "`sandbox status` shows the stack; KFP's pods are in namespace "
                f"{versions.KFP_NAMESPACE} (`kubectl --context {self.tools.context} -n {versions.KFP_NAMESPACE} "
                "get pods`)",
            ) from None

    def _wait(self, client, kfp_run: str, outcome: PipelineOutcome):
        """The run once it ended (None after the timeout: the run is terminated and the outcome says why)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            run = client.get_run(kfp_run)
            state = str(run.state or "").upper()
            if state in FINAL:
                return run
            if state not in RUNNING:
                logger.warning("KFP run %s is in state %r, which this runner does not know; waiting", kfp_run, state)
            if time.monotonic() >= deadline:
                outcome.error = f"the KFP run {kfp_run} did not end within {self.timeout_s:g}s (state {state or '?'})"
                with contextlib.suppress(Exception):
                    client.terminate_run(kfp_run)
                    outcome.error += "; it was terminated"
                outcome.log_tail = self._failed_log(run, kfp_run)
                return None
            time.sleep(self.poll_s)

    # ------------------------------------------------------------------ what comes back

    def _read_outputs(self, run, kfp_run: str, pipeline_spec: dict, outcome: PipelineOutcome) -> None:
        declared = pipeline_spec.get("root", {}).get("outputDefinitions", {})
        if not declared:
            outcome.state = PipelineState.SUCCEEDED
            return
        try:
            pod = next((p for p in self._pods(kfp_run) if _executor_of(p) == OUTPUTS_TASK), None)
            values = _parse_outputs(self._pod_log(pod and pod["metadata"]["name"]))
        except (ToolError, ValueError) as exc:
            outcome.error = (
                f"the KFP run {kfp_run} succeeded, but its outputs could not be read from the {OUTPUTS_TASK} "
                f"step's log: {getattr(exc, 'message', exc)}"
            )
            return
        types = {name: spec.get("parameterType") for name, spec in declared.get("parameters", {}).items()}
        outcome.outputs = {name: _typed(value, types.get(name)) for name, value in values.items()}
        outcome.state = PipelineState.SUCCEEDED

    def _pod_log(self, pod: str | None, lines: int | None = None) -> str:
        if not pod:
            raise ValueError(f"no pod of the run is that step's (label {RUN_ID_LABEL}, annotation {NODE_NAME})")
        args = ["logs", pod, "-n", versions.KFP_NAMESPACE, "-c", MAIN_CONTAINER]
        args += [f"--tail={lines}"] if lines else []
        return self.tools.output(self.tools.kubectl(*args, mutates=False, timeout_s=60))

    def _pods(self, kfp_run: str) -> list[dict[str, Any]]:
        """The run's pods (KFP labels each with its run id), oldest first."""
        found = self.tools.get_json("pods", namespace=versions.KFP_NAMESPACE, selector=f"{RUN_ID_LABEL}={kfp_run}")
        items = (found or {}).get("items", [])
        return sorted(items, key=lambda pod: pod.get("metadata", {}).get("creationTimestamp") or "")

    def _failed_log(self, run, kfp_run: str) -> str:
        """The failed step's last log lines (its executor pod's `main` container); else what keeps pods from running."""
        try:
            pods = self._pods(kfp_run)
            failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
            failed = [p for p in failed if _executor_of(p)] or failed  # a step's own pod before a driver's
            if failed:
                name = failed[-1]["metadata"]["name"]
                step = _executor_of(failed[-1]) or "a driver"
                log = self._pod_log(name, TAIL_LINES).rstrip()
                return f"--- pod {name} ({step}, namespace {versions.KFP_NAMESPACE})\n{log}"
            waiting = [line for p in pods if (line := _waiting(p))]
            return "\n".join(waiting) or f"(no failed pod of KFP run {kfp_run} was found)"
        except (ToolError, ValueError) as exc:
            return f"(the failed step's log could not be read: {getattr(exc, 'message', exc)})"


# --------------------------------------------------------------------------- helpers


def load_package(pipeline: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and platform spec of a ``@dsl.pipeline`` function (compiled here) or a YAML package."""
    if isinstance(pipeline, str | os.PathLike):
        path = Path(pipeline)
        if not path.is_file():
            raise FileNotFoundError(f"no compiled pipeline at {path}")
        if path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"{path} is not a pipeline YAML package (KFP's compiler writes .yaml)")
        text = path.read_text()
    elif hasattr(pipeline, "component_spec"):
        from kfp import compiler

        with tempfile.TemporaryDirectory(prefix="sandbox-kfp-") as folder:
            target = Path(folder) / "pipeline.yaml"
            compiler.Compiler().compile(pipeline, str(target))
            text = target.read_text()
    else:
        raise TypeError(f"not a KFP pipeline or a compiled package's path: {pipeline!r}")
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    if not documents or "root" not in documents[0]:
        raise ValueError("not a KFP pipeline spec (no `root`)")
    platform: dict[str, Any] = {}
    for extra in documents[1:]:
        platform.update(extra)
    return documents[0], platform


def add_outputs_task(pipeline_spec: dict[str, Any], image: str) -> None:
    """A last task taking the pipeline's outputs as inputs and printing them (see the module's docstring)."""
    root = pipeline_spec["root"]
    outputs = root.get("dag", {}).get("outputs", {})
    definitions = root.get("outputDefinitions", {})
    parameters, artifacts, producers = {}, {}, set()
    for name, source in outputs.get("parameters", {}).items():
        origin = source.get("valueFromParameter")
        if origin:
            producers.add(origin["producerSubtask"])
            parameters[name] = {
                "taskOutputParameter": {
                    "producerTask": origin["producerSubtask"],
                    "outputParameterKey": origin["outputParameterKey"],
                }
            }
    for name, source in outputs.get("artifacts", {}).items():
        selectors = source.get("artifactSelectors") or []
        if selectors:
            producers.add(selectors[0]["producerSubtask"])
            artifacts[name] = {
                "taskOutputArtifact": {
                    "producerTask": selectors[0]["producerSubtask"],
                    "outputArtifactKey": selectors[0]["outputArtifactKey"],
                }
            }
    if not parameters and not artifacts:
        return
    component, executor = f"comp-{OUTPUTS_TASK}", f"exec-{OUTPUTS_TASK}"
    inputs: dict[str, Any] = {}
    if parameters:
        inputs["parameters"] = {name: definitions["parameters"][name] for name in parameters}
    if artifacts:
        inputs["artifacts"] = {name: definitions["artifacts"][name] for name in artifacts}
    pipeline_spec.setdefault("components", {})[component] = {"executorLabel": executor, "inputDefinitions": inputs}
    pipeline_spec.setdefault("deploymentSpec", {}).setdefault("executors", {})[executor] = {
        "container": {"image": image, "command": ["python3", "-c", _OUTPUTS_PROGRAM], "args": ["{{$}}"]}
    }
    task_inputs: dict[str, Any] = {}
    if parameters:
        task_inputs["parameters"] = parameters
    if artifacts:
        task_inputs["artifacts"] = artifacts
    root["dag"].setdefault("tasks", {})[OUTPUTS_TASK] = {
        "cachingOptions": {},
        "componentRef": {"name": component},
        "dependentTasks": sorted(producers),
        "inputs": task_inputs,
        "taskInfo": {"name": OUTPUTS_TASK},
    }


def _parse_outputs(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(OUTPUTS_MARKER):
            return json.loads(line[len(OUTPUTS_MARKER) :])
    raise ValueError(f"no line starting with {OUTPUTS_MARKER.strip()!r} in it")


def _typed(value: Any, parameter_type: str | None) -> Any:
    """A value as kfp.local gives it: NUMBER_INTEGER as int (JSON may carry 570.0), the rest as KFP sent it."""
    if parameter_type == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    if parameter_type == "NUMBER_DOUBLE" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _executor_of(pod: dict[str, Any]) -> str | None:
    """The task whose step a pod runs, from Argo's node name (`<workflow>.root.<task>.executor`); None for a driver."""
    node = pod.get("metadata", {}).get("annotations", {}).get(NODE_NAME, "")
    parts = node.split(".")
    if len(parts) >= 2 and parts[-1].split("(")[0] == "executor":  # `executor(0)` on a retried step
        return parts[-2]
    return None


def _waiting(pod: dict[str, Any]) -> str | None:
    """A pod that is not running, with its containers' reasons (ImagePullBackOff, CreateContainerConfigError...)."""
    status = pod.get("status", {})
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return None
    reasons = [
        f"{waiting.get('reason', '?')}: {waiting.get('message', '')}".rstrip(": ")
        for container in status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
        if (waiting := container.get("state", {}).get("waiting"))
    ]
    step = _executor_of(pod) or "a driver"
    return f"--- pod {pod['metadata']['name']} ({step}) {status.get('phase', '?')}: " + (
        "; ".join(reasons) or "no reason"
    )


def _failure(run, state: str) -> str:
    """Why a run that ended without succeeding did: KFP's state, the run's error, the failed tasks' errors."""
    reasons = {
        "FAILED": "failed",
        "CANCELED": "was canceled",
        "SKIPPED": "was skipped",
    }
    line = f"the KFP run {run.run_id} {reasons.get(state, state.lower() or 'ended without succeeding')}"
    messages = [run.error.message] if run.error is not None and run.error.message else []
    for task in getattr(run.run_details, "task_details", None) or []:
        if task.error is not None and task.error.message and task.error.message not in messages:
            messages.append(f"{task.display_name}: {task.error.message}")
    return line + (": " + "; ".join(messages) if messages else "")


@contextlib.contextmanager
def _api_errors(api: str, reach: str):
    """KFP's API refusing a call (its status and message), or no longer answering: one clear error."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        raise ServiceStartError(
            f"Kubeflow Pipelines' API at {api} answered {exc.status} {exc.reason}",
            hint="read its message below; `kubectl -n kubeflow logs deploy/ml-pipeline` is the API server's log",
            details=str(exc.body or "")[-2000:] or None,
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        raise NotRunningError(
            f"Kubeflow Pipelines' API at {api} stopped answering: {exc}",
            hint=(reach + "; " if reach else "") + "`sandbox status` shows the stack",
        ) from None


@contextlib.contextmanager
def _quiet_client():
    """kfp.Client prints its links and warns that it needs KFP >= 2.0.0-beta.2: to the log instead."""
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        yield
    for line in printed.getvalue().splitlines():
        logger.debug("kfp.Client: %s", line)
