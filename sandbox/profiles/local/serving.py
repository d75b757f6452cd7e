"""Model deployments on the local profile: KServe model servers and A/B routers as processes.

Deployments are recorded in `<dir>/deployments.json`, so `sandbox up` restores
them and `sandbox down` stops them. Each runs from `<dir>/deployments/<name>/`
(service.pid, service.log), on a port from the sandbox's port map.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from sandbox.endpoints import Endpoints, InferenceEndpoint
from sandbox.errors import ConfigError, NotRunningError, SandboxError
from sandbox.gpu import Toleration, Workload
from sandbox.net import LOOPBACK
from sandbox.profiles.local.process import PORTS_MARKER, Identity, ManagedProcess
from sandbox.profiles.local.readiness import wait_ready
from sandbox.profiles.local.state import PortMap, SandboxDir
from sandbox.profiles.locking import locked
from sandbox.serving.specs import (
    SANDBOX_RUNTIME,
    DeploymentSpec,
    DeploymentStatus,
    VariantSpec,
    check_registered,
    validate_model_uri,
    validate_name,
    validate_runtime,
    validate_split,
    variant_name,
    variant_specs,
)


class DeploymentStore:
    """What is deployed and where: `<dir>/deployments.json`, the port map, the runtime folders.

    Reading it needs no running stack (status, logs and endpoints use it); `LocalServing`
    adds the commands that start and stop servers.
    """

    def __init__(self, sandbox: SandboxDir, ports: PortMap):
        self.sandbox = sandbox
        self.ports = ports
        self._file = sandbox.root / "deployments.json"

    def _load(self) -> dict[str, DeploymentSpec]:
        if not self._file.exists():
            return {}
        raw = json.loads(self._file.read_text())
        return {name: DeploymentSpec(**item) for name, item in raw.items()}

    def _save(self, records: dict[str, DeploymentSpec]) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: d.model_dump() for n, d in records.items()}, indent=2))
        tmp.replace(self._file)

    def records(self) -> dict[str, DeploymentSpec]:
        return self._load()

    def get(self, name: str) -> DeploymentSpec | None:
        return self._load().get(name)

    def _process(self, name: str) -> ManagedProcess:
        folder = self.sandbox.root / "deployments" / name
        return ManagedProcess(
            folder / "service.pid", folder / "service.log", Identity(self.sandbox.home, f"deployment:{name}")
        )

    def url(self, name: str) -> str | None:
        port = self.ports.get(f"deploy.{name}")
        return f"http://{LOOPBACK}:{port}" if port else None

    def inference_endpoints(self) -> dict[str, InferenceEndpoint]:
        out = {}
        for name, record in self._load().items():
            base = self.url(name)
            if base is None:
                continue
            grpc_port = self.ports.get(f"deploy.{name}.grpc") if record.kind == "model" else None
            out[name] = InferenceEndpoint(
                name=name,
                url=base,
                v1_predict=f"{base}/v1/models/{name}:predict",
                v2_infer=f"{base}/v2/models/{name}/infer",
                kind=record.kind,
                model_uri=record.model_uri,
                variants=[v.label for v in record.variants],
                grpc=f"{LOOPBACK}:{grpc_port}" if grpc_port else None,
            )
        return out

    def log_file(self, name: str) -> Path:
        return self._process(name).log_file


class LocalServing(DeploymentStore):
    """Deploy, split, list and undeploy on the local profile."""

    def __init__(
        self, sandbox: SandboxDir, ports: PortMap, endpoints: Endpoints, *, startup_timeout: float, scheduler=None
    ):
        super().__init__(sandbox, ports)
        self.lock = sandbox.lock  # deploy, split and undeploy run under the sandbox lock
        self.endpoints = endpoints
        self.startup_timeout = startup_timeout
        self.scheduler = scheduler

    # ---------------------------------------------------------------- processes

    def _command(self, record: DeploymentSpec, port: int) -> list[str]:
        if record.kind == "model":
            grpc_port = self.ports.claim(f"deploy.{record.name}.grpc", 0, setting="(automatic)")
            return [
                sys.executable,
                "-m",
                "sandbox.serving.model_server",
                "--name",
                record.name,
                "--model-uri",
                record.model_uri or "",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--batch-size",
                str(record.batch_size),
                "--batch-wait-ms",
                str(record.batch_wait_ms),
                *([] if record.inference_log else ["--no-inference-log"]),
                *(["--allow-nan"] if record.allow_nan else []),
            ]
        argv = [sys.executable, "-m", "sandbox.serving.router", "--name", record.name]
        argv += ["--host", LOOPBACK, "--port", str(port)]
        for variant in record.variants:
            child = variant_name(record.name, variant.label)
            argv += ["--variant", f"{variant.label}={self.url(child)}/{child}:{variant.weight:g}"]
        if record.sticky_header:
            argv += ["--sticky-header", record.sticky_header]
        return argv

    def _start(self, record: DeploymentSpec) -> str:
        return self._start_many([record])[0]

    def _start_many(self, records: list[DeploymentSpec]) -> list[str]:
        """Launch every server first, then wait for each: model loads overlap instead of queueing."""
        launched: list[tuple[DeploymentSpec, ManagedProcess, str]] = []
        try:
            for record in records:
                process = self._process(record.name)
                process.stop()  # replace whatever ran under this name
                process.log_file.parent.mkdir(parents=True, exist_ok=True)
                port = self.ports.claim(f"deploy.{record.name}", 0, setting="(automatic)")
                command = self._command(record, port)
                self.ports.save()
                env = {**os.environ, **self.endpoints.env(), "NO_PROXY": "127.0.0.1,localhost"}
                env.update(self._gpu_env(record))
                keys = (f"deploy.{record.name}", f"deploy.{record.name}.grpc")
                env[PORTS_MARKER] = json.dumps({key: self.ports.get(key) for key in keys if self.ports.get(key)})
                process.start(command, env=env, cwd=process.log_file.parent)
                launched.append((record, process, f"http://{LOOPBACK}:{port}"))
            notes = []
            for record, process, base in launched:
                took = wait_ready(
                    f"deployment {record.name}", _ready_probe(base, record.name), process, timeout=self.startup_timeout
                )
                notes.append(f"ready in {took:.1f}s at {base}")
            return notes
        except BaseException:
            for _, process, _ in launched:
                process.stop(timeout=10)
            raise

    @staticmethod
    def workload_name(name: str) -> str:
        return f"serve-{name}"

    def _gpu_env(self, record: DeploymentSpec) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for a GPU deployment: its placement, made now if there is none."""
        if not record.gpus:
            return {}
        if self.scheduler is None:
            raise ConfigError("this profile cannot place GPU deployments", hint="deploy without --gpus")
        placement = self.scheduler.placement(self.workload_name(record.name))
        if placement is not None and placement.node is not None:
            return placement.env
        decision = self.scheduler.submit(
            Workload(
                name=self.workload_name(record.name),
                requests={"cpu": "1", "memory": "2Gi"},
                limits={"nvidia.com/gpu": str(record.gpus)},
                tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
            )
        )
        if decision.status != "Scheduled":
            if decision.status == "Pending":
                self.scheduler.release(self.workload_name(record.name))
            raise SandboxError(
                f"cannot place {record.name} with {record.gpus} GPU(s): {decision.message}",
                hint="free GPUs (`sandbox gpu status`), ask for fewer, or raise the quota in sandbox.yaml",
            )
        return decision.env

    def _release_gpus(self, name: str) -> None:
        if self.scheduler is not None and self.scheduler.placement(self.workload_name(name)) is not None:
            self.scheduler.release(self.workload_name(name))

    def _stop(self, name: str) -> bool:
        return self._process(name).stop(timeout=15)

    # ---------------------------------------------------------------- commands

    @locked("serve deploy")
    def deploy(
        self,
        name: str,
        model_uri: str,
        *,
        batch_size: int = 1,
        batch_wait_ms: float = 5.0,
        gpus: int = 0,
        inference_log: bool = True,
        allow_nan: bool = False,
        runtime: str = SANDBOX_RUNTIME,
    ) -> str:
        validate_runtime(runtime, profile="local")  # KServe's own runtimes exist on the Kubernetes profiles only
        validate_name(name)
        validate_model_uri(model_uri)
        if batch_size < 1 or batch_wait_ms < 0:
            raise ConfigError(
                "batch size must be >= 1 and batch wait >= 0 ms", hint="e.g. --batch-size 32 --batch-wait-ms 5"
            )
        check_registered(model_uri, self.endpoints.mlflow_tracking_uri)
        records = self._load()
        existing = records.get(name)
        if existing is not None and existing.kind == "split":
            raise ConfigError(f"{name!r} is an A/B split", hint=f"undeploy it first: sandbox serve undeploy {name}")
        if gpus < 0:
            raise ConfigError("--gpus must be 0 or more", hint="e.g. --gpus 1")
        record = DeploymentSpec(
            name=name,
            kind="model",
            model_uri=model_uri,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            gpus=gpus,
            inference_log=inference_log,
            allow_nan=allow_nan,
        )
        if existing is not None and existing.gpus != gpus:
            self._release_gpus(name)  # a redeploy with another GPU count is placed afresh
        try:
            note = self._start(record)
        except BaseException:
            if existing is None:
                self._release_gpus(name)
            raise
        placement = self.scheduler.placement(self.workload_name(name)) if gpus and self.scheduler else None
        if placement is not None:
            note += f", GPUs {','.join(map(str, placement.devices))} on {placement.node}"
        records[name] = record
        self._save(records)
        return note

    @locked("serve split")
    def split(
        self,
        name: str,
        variants: list[VariantSpec],
        *,
        sticky_header: str | None = None,
        batch_size: int = 1,
        batch_wait_ms: float = 5.0,
        inference_log: bool = True,
        allow_nan: bool = False,
    ) -> list[str]:
        validate_split(name, variants)
        for variant in variants:
            check_registered(variant.model_uri, self.endpoints.mlflow_tracking_uri)
        records = self._load()
        if name in records and records[name].kind == "model":
            raise ConfigError(
                f"{name!r} is a single-model deployment", hint=f"undeploy it first: sandbox serve undeploy {name}"
            )
        children = variant_specs(
            name,
            variants,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            inference_log=inference_log,
            allow_nan=allow_nan,
        )
        notes = [f"{child.name}: {note}" for child, note in zip(children, self._start_many(children), strict=True)]
        router = DeploymentSpec(name=name, kind="split", variants=variants, sticky_header=sticky_header)
        try:
            notes.append(f"{name} (router): {self._start(router)}")
        except BaseException:
            for child in children:  # no half-made split left running
                self._stop(child.name)
            raise
        records.update({child.name: child for child in children})
        records[name] = router
        self._save(records)
        return notes

    @locked("serve undeploy")
    def undeploy(self, name: str) -> list[str]:
        records = self._load()
        if name not in records:
            raise NotRunningError(f"no deployment named {name!r}", hint="see `sandbox serve list`")
        if records[name].parent:
            raise ConfigError(
                f"{name!r} is a variant of {records[name].parent!r}", hint=f"undeploy {records[name].parent!r}"
            )
        removed = [name] + [n for n, r in records.items() if r.parent == name]
        for item in removed:
            self._stop(item)
            self._release_gpus(item)
            records.pop(item, None)
        self._save(records)
        return removed

    def start_all(self) -> list[tuple[str, str]]:
        """Restore recorded deployments (variants before their routers)."""
        records = self._load()
        results = []
        for kind in ("model", "split"):  # a router needs its variants up
            pending = []
            for record in (r for r in records.values() if r.kind == kind):
                if self._process(record.name).running() is not None and self._healthy(record.name):
                    results.append((record.name, "already running"))
                else:
                    pending.append(record)
            results += [(r.name, note) for r, note in zip(pending, self._start_many(pending), strict=True)]
        return results

    def stop_all(self) -> list[str]:
        records = self._load()
        ordered = sorted(records.values(), key=lambda r: r.kind != "split")  # routers first
        return [r.name for r in ordered if self._stop(r.name)]

    def _healthy(self, name: str) -> bool:
        url = self.url(name)
        try:
            return httpx.get(f"{url}/v2/models/{name}/ready", timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def statuses(self) -> list[DeploymentStatus]:
        out = []
        for name, record in self._load().items():
            proc = self._process(name).running()
            state = "stopped" if proc is None else ("running" if self._healthy(name) else "unhealthy")
            detail = (
                ", ".join(f"{v.label}={v.model_uri} ({v.weight:g})" for v in record.variants)
                if record.kind == "split"
                else f"batch {record.batch_size}/{record.batch_wait_ms:g}ms"
                if record.batch_size > 1
                else "no batching"
            )
            if record.kind == "model" and not record.inference_log:
                detail += ", inference log off"
            if record.kind == "model" and record.allow_nan:
                detail += ", NaN allowed"
            out.append(
                DeploymentStatus(
                    name=name,
                    kind=record.kind if not record.parent else f"variant of {record.parent}",
                    state=state,
                    instance=f"pid {proc.pid}" if proc else None,
                    url=self.url(name),
                    model_uri=record.model_uri,
                    detail=detail,
                )
            )
        return out


def _ready_probe(base: str, name: str):
    def probe() -> None:
        response = httpx.get(f"{base}/v2/models/{name}/ready", timeout=5, trust_env=False)
        response.raise_for_status()

    return probe
