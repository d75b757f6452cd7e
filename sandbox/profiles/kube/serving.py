"""The kind and cluster profiles' serving runtime: KServe InferenceServices (Standard mode) over kubectl.

What to run is decided by the planner (`sandbox.serving.deployments`); `KServeRuntime` applies and deletes the
objects of `manifests/serving.py` (validated offline first, `validate.check_objects`), waits for them, and reads
what runs back from the API, where each object carries its record (the spec annotation). From the host, each
deployment is reached through the profile's reach strategy (`kube/reach.py`): a `kubectl port-forward` on
127.0.0.1 to its Service, on a port kept with the sandbox's others, claimed when it starts and released when it
stops; only `address(reach=True)` starts a forward.

- Ready is the InferenceService's `Ready` condition (`kubectl wait`); a failure carries the predictor pods'
  events and last log lines. A record started again (``replacing``) gets a new restart mark on its predictor,
  so its pods are replaced (a moved alias takes effect), and the rollout is waited for.
- `kserve-mlserver` records get their `storageUri` from the registry (`mlserver.resolve_storage_uri`) and the
  S3 ServiceAccount KServe's storage initializer reads.
- A split's variants are applied all at once (their models load in parallel), then its router in front of them.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from sandbox.errors import ConfigError, ServiceStartError
from sandbox.profiles.kube import validate
from sandbox.profiles.kube.manifests.serving import (
    COMPONENT,
    GRPC_PORT,
    ISVC_LABEL,
    RESTART_ANNOTATION,
    SERVICE_PORT,
    inference_service,
    kserve_s3_objects,
    predictor_service,
    record_of,
    router_name,
    router_objects,
)
from sandbox.profiles.kube.manifests.spec import (
    BUCKETS_JOB,
    MLFLOW,
    NOTEBOOKS,
    POSTGRES,
    S3,
    StackSpec,
    instance_selector,
)
from sandbox.profiles.kube.mlserver import resolve_storage_uri
from sandbox.profiles.kube.reach import Reach, deployment_forward_name
from sandbox.profiles.kube.state import KubeState
from sandbox.profiles.kube.tools import ToolError, Tools, pod_ready, status_condition
from sandbox.profiles.locking import unlocked
from sandbox.serving.runtime import Address, Observed
from sandbox.serving.specs import KSERVE_MLSERVER, SANDBOX_RUNTIME, DeploymentSpec

READY_TIMEOUT_S = 600  # what KServe's own e2e tests wait for an InferenceService
ROUTER_TIMEOUT_S = 300
LOG_LINES = 30

# KServe copies an InferenceService's labels onto the Deployment, Service and pods it makes (kserve
# pkg/controller/v1beta1/inferenceservice/components/predictor.go, buildObjectMeta: the runtime's labels,
# the InferenceService's, the predictor's, then its own), so a predictor's pods carry
# `app.kubernetes.io/name: NAME` and the stack's instance. The stack's Services select exactly those two
# labels (`manifests.spec.selector`): a deployment named after a stack component would put its pods behind
# that component's Service.
RESERVED_NAMES = frozenset({POSTGRES, S3, MLFLOW, NOTEBOOKS, BUCKETS_JOB})


def _restart_mark() -> str:
    """A fresh value for RESTART_ANNOTATION: when it was made, and unique even within one second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"-{secrets.token_hex(4)}"


def _has_grpc(record: DeploymentSpec) -> bool:
    return record.kind == "model" and record.runtime == SANDBOX_RUNTIME


def _label(obj: dict[str, Any], key: str) -> str | None:
    return obj.get("metadata", {}).get("labels", {}).get(key)


class KServeRuntime:
    """`ServingRuntime` of the kind and cluster profiles: InferenceServices and routers in the stack's namespace.

    ``start_forwards``: whether `address(reach=True)` may start a port-forward (False for a profile's reads:
    `status` lists what runs and starts nothing)."""

    model_runtimes = (SANDBOX_RUNTIME, KSERVE_MLSERVER)
    reserved_names = RESERVED_NAMES
    read_only = None

    def __init__(
        self,
        profile: str,
        spec: StackSpec,
        tools: Tools,
        reach: Reach,
        state: KubeState,
        *,
        tracking_uri: Callable[[], str],
        ready_timeout_s: int = READY_TIMEOUT_S,
        lock: Callable[[str], contextlib.AbstractContextManager] = unlocked,
        start_forwards: bool = True,
    ):
        self.profile = profile
        self.spec = spec
        self.tools = tools
        self.reach = reach  # the profile's: every deployment's loopback port and port-forward
        self.state = state
        self._tracking_uri = tracking_uri  # the host-side MLflow URL (registry lookups, kserve-mlserver's storageUri)
        self.ready_timeout_s = ready_timeout_s
        self.lock = lock  # the profile's (`KubeProfile.lock`): the planner holds it around every change
        self.start_forwards = start_forwards

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def selector(self) -> str:
        return f"{instance_selector(self.spec.instance)},app.kubernetes.io/component={COMPONENT}"

    def tracking_uri(self) -> str:
        return self._tracking_uri()

    # ---------------------------------------------------------------- reading the API

    def _items(self, kind: str) -> list[dict[str, Any]]:
        return (self.tools.get_json(kind, namespace=self.namespace, selector=self.selector) or {}).get("items", [])

    def _objects(self) -> list[tuple[DeploymentSpec, dict[str, Any]]]:
        """Every deployment made here, with its object (the InferenceService, or a split's router Deployment)."""
        out = []
        for obj in self._items("inferenceservices") + self._items("deployments"):
            record = record_of(obj)
            if record is None:
                continue
            # Only the object that is the record: KServe may copy an InferenceService's labels and
            # annotations onto the predictor Deployment it makes.
            own = router_name(record.name) if record.kind == "split" else record.name
            if obj.get("kind") == ("Deployment" if record.kind == "split" else "InferenceService"):
                if obj["metadata"].get("name") == own:
                    out.append((record, obj))
        return out

    def records(self) -> dict[str, DeploymentSpec]:
        return {record.name: record for record, _ in self._objects()}

    def _pods(self, selector: str | None = None) -> list[dict[str, Any]]:
        return (self.tools.get_json("pods", namespace=self.namespace, selector=selector) or {}).get("items", [])

    def observe(self, records: list[DeploymentSpec]) -> dict[str, Observed]:
        """Each record's state from its object's condition (a model) or its router's pods (a split); starts nothing."""
        wanted = {record.name for record in records}
        objects = [(record, obj) for record, obj in self._objects() if record.name in wanted]
        pods = self._pods() if objects else []
        out = {}
        for record, obj in objects:
            if record.kind == "split":
                mine = [p for p in pods if _label(p, "app.kubernetes.io/name") == router_name(record.name)]
                ready = [p for p in mine if pod_ready(p)] and obj.get("status", {}).get("readyReplicas")
                state, why = ("running", "") if ready else ("unhealthy", "the router's pod is not Ready")
            else:
                mine = [p for p in pods if _label(p, ISVC_LABEL) == record.name]
                condition = status_condition(obj, "Ready")
                if condition is None:
                    state, why = "starting", "no Ready condition yet"
                elif condition.get("status") == "True":
                    state, why = "running", ""
                else:
                    state = "unhealthy"
                    why = condition.get("message") or condition.get("reason") or "Ready is False"
            names = ", ".join(p["metadata"]["name"] for p in mine) or None
            out[record.name] = Observed(state, names, why)
        return out

    # ---------------------------------------------------------------- applying

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        validate.check_objects(objects)  # offline first: a bad object never reaches the cluster
        self.tools.run(self.tools.apply(objects))

    def _delete(self, *targets: str) -> None:
        self.tools.run(
            self.tools.kubectl("delete", *targets, "-n", self.namespace, "--ignore-not-found", "--wait=false")
        )

    @staticmethod
    def _targets(record: DeploymentSpec) -> list[str]:
        if record.kind == "split":
            return [f"deployment/{router_name(record.name)}", f"service/{router_name(record.name)}"]
        return [f"inferenceservice/{record.name}"]

    def start(self, records: list[DeploymentSpec], *, replacing: Collection[str] = ()) -> list[str]:
        """Models (variants) first, all applied at once and then each waited for; then the splits' routers."""
        models = [record for record in records if record.kind != "split"]
        splits = [record for record in records if record.kind == "split"]
        # A record started again replaces its predictor's pods (see RESTART_ANNOTATION) and waits for the new ones.
        restart = _restart_mark() if any(record.name in replacing for record in models) else None
        objects: list[dict[str, Any]] = []
        storage: dict[str, str] = {}
        for record in models:
            if record.runtime == KSERVE_MLSERVER:
                storage[record.name] = resolve_storage_uri(record.model_uri or "", self.tracking_uri())
                objects += [o for o in kserve_s3_objects(self.spec) if o not in objects]
            mark = restart if record.name in replacing else None
            objects.append(inference_service(self.spec, record, storage_uri=storage.get(record.name), restart=mark))
        routers = [obj for record in splits for obj in router_objects(self.spec, record)]
        validate.check_objects(objects + routers)  # every object before the first is applied
        notes: dict[str, str] = {}
        try:
            if objects:
                self._apply(objects)
            for record in models:
                if record.name in replacing and restart:
                    self._wait_rollout(record.name, restart)
                self._wait_ready(record.name)
                model = f" (model {storage[record.name]})" if record.name in storage else ""
                notes[record.name] = f"InferenceService Ready{model}"
            if routers:
                self._apply(routers)
            for record in splits:
                name = router_name(record.name)
                self._rollout(
                    name,
                    f"app.kubernetes.io/name={name}",
                    f"the router of {record.name} did not become ready",
                    hint=f"read its pod's events and log below (`sandbox logs {record.name}`)",
                    timeout_s=ROUTER_TIMEOUT_S,
                )
                notes[record.name] = f"Deployment {name} ready"
        except BaseException:
            made = [record for record in splits + models if record.name not in replacing]  # routers first
            if made:  # no half-made deployment left behind (its report is in the error)
                self._delete(*(target for record in made for target in self._targets(record)))
            raise
        self._claim(records)
        # A running forward to a replaced predictor pod goes nowhere: the next `address(reach=True)` starts a new one.
        self.reach.restart(self.state, [record.name for record in models if record.name in replacing])
        return [notes[record.name] for record in records]

    def _claim(self, records: list[DeploymentSpec]) -> None:
        """Keep a loopback port for each record's forwards (under the lock: a later read finds them)."""
        keys = [deployment_forward_name(r.name) for r in records]
        keys += [deployment_forward_name(r.name, grpc=True) for r in records if _has_grpc(r)]
        self.reach.claim(self.state, keys)

    def stop(self, names: list[str]) -> None:
        """Delete the named records' objects (a router's Deployment and Service, a model's InferenceService), in
        one call, and release their ports and forwards."""
        records = self.records()
        known = [records[name] for name in names if name in records]
        if known:
            self._delete(*(target for record in known for target in self._targets(record)))
        self.reach.release(self.state, [record.name for record in known])

    # ---------------------------------------------------------------- waiting

    def _wait_ready(self, name: str) -> None:
        """The InferenceService's Ready condition; a failure says why, with its pods' events and logs."""
        command = self.tools.wait(
            f"inferenceservice/{name}", "condition=Ready", namespace=self.namespace, timeout_s=self.ready_timeout_s
        )
        try:
            self.tools.run(command)
        except ToolError as exc:
            obj = self.tools.get_json("inferenceservice", name, namespace=self.namespace) or {}
            condition = status_condition(obj, "Ready") or {}
            why = condition.get("message") or condition.get("reason") or exc.message
            raise ServiceStartError(
                f"deployment {name} is not Ready after {self.ready_timeout_s}s: {why}",
                hint=f"read its predictor pod's events and log below (`sandbox logs {name}`); a model the runtime "
                "cannot load, an image that cannot be pulled or a GPU request no node or quota admits shows there",
                details=self.pods_report(f"{ISVC_LABEL}={name}") or exc.details,
            ) from None

    def _wait_rollout(self, name: str, restart: str) -> None:
        """Until the predictor's Deployment (named as its Service in Standard mode) carries ``restart`` in its
        pod template, i.e. KServe has reconciled the change, then until Kubernetes has rolled it out."""
        deployment = predictor_service(name)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            obj = self.tools.get_json("deployment", deployment, namespace=self.namespace) or {}
            template = obj.get("spec", {}).get("template", {}).get("metadata", {})
            if (template.get("annotations") or {}).get(RESTART_ANNOTATION) == restart:
                break
            if time.monotonic() >= deadline:
                raise ServiceStartError(
                    f"KServe did not update deployment/{deployment} for the redeploy of {name} "
                    f"within {self.ready_timeout_s}s",
                    hint="is KServe's controller running? `kubectl -n kserve logs deploy/kserve-controller-manager`",
                )
            time.sleep(1.0)
        self._rollout(
            deployment,
            f"{ISVC_LABEL}={name}",
            f"the redeploy of {name} did not roll out within {self.ready_timeout_s}s",
            hint=f"read its predictor pods' events and log below (`sandbox logs {name}`)",
            timeout_s=self.ready_timeout_s,
        )

    def _rollout(self, deployment: str, pods: str, failure: str, *, hint: str, timeout_s: int) -> None:
        """`kubectl rollout status` of ``deployment``; a failure carries its pods' (selector ``pods``) report."""
        try:
            self.tools.run(
                self.tools.rollout_status(f"deployment/{deployment}", namespace=self.namespace, timeout_s=timeout_s)
            )
        except ToolError as exc:
            raise ServiceStartError(failure, hint=hint, details=self.pods_report(pods) or exc.details) from None

    def pods_report(self, selector: str, *, lines: int = LOG_LINES) -> str:
        """Each selected pod's phase, events and last log lines."""
        return "\n".join(self.tools.pod_report(pod, self.namespace, lines=lines) for pod in self._pods(selector))

    # ---------------------------------------------------------------- reaching them from the host

    def address(self, record: DeploymentSpec, *, reach: bool) -> Address | None:
        """REST base URL (and a model server's V2 gRPC) of a record on the host, through the profile's reach."""
        if record.kind == "split":
            service, grpc = router_name(record.name), None
        else:
            service, grpc = predictor_service(record.name), GRPC_PORT if _has_grpc(record) else None
        reached = self.reach.address(
            self.state, record.name, service, SERVICE_PORT, grpc_port=grpc, reach=reach and self.start_forwards
        )
        return Address(reached[0], reached[1]) if reached else None

    # ---------------------------------------------------------------- logs

    def log_selector(self, name: str) -> str | None:
        """The label selector of a deployment's pods, or None when no deployment has that name."""
        record = self.records().get(name)
        if record is None:
            return None
        if record.kind == "split":
            return f"app.kubernetes.io/name={router_name(name)},app.kubernetes.io/instance={self.spec.instance}"
        return f"{ISVC_LABEL}={name}"

    def logs(self, name: str, *, lines: int, follow: bool) -> Iterator[str]:
        selector = self.log_selector(name)
        if selector is None:
            raise ConfigError(f"no deployment named {name!r}", hint="see `sandbox serve list`")
        return self.tools.stream(
            self.tools.logs(namespace=self.namespace, lines=lines, selector=selector, follow=follow)
        )
