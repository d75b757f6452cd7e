"""The local profile's serving runtime: model servers and A/B routers as processes on 127.0.0.1.

What to run is decided by the planner (`sandbox.serving.deployments`); this module starts, stops and lists.
Records are kept in `<dir>/deployments.json`, so `sandbox up` restores them and `sandbox down` stops them. Each
runs from `<dir>/deployments/<name>/` (service.pid, service.log, inference-journal/), on ports from the sandbox's
port map. A model server's inference journal is shipped by the supervisor when it runs (`inference_log_shipper`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Collection
from pathlib import Path

import httpx

from sandbox import wire
from sandbox.endpoints import Endpoints, log_in_to_mlflow
from sandbox.errors import ConfigError, SandboxError
from sandbox.gpu import Toleration, Workload
from sandbox.net import LOOPBACK
from sandbox.profiles.local.process import PORTS_MARKER, Identity, ManagedProcess
from sandbox.profiles.local.readiness import wait_ready
from sandbox.profiles.local.state import PortMap, SandboxDir
from sandbox.profiles.locking import released_while_waiting, unlocked
from sandbox.serving.inference_log import SHIPPER_ENV
from sandbox.serving.launch import ModelServerArgs, RouterArgs, RouteVariant
from sandbox.serving.runtime import Address, Observed
from sandbox.serving.specs import SANDBOX_RUNTIME, DeploymentSpec, variant_name

# Readiness without the token (`wire.HEALTH_PATHS`): a model server is ready when its one model is, a router when
# every variant is.
READY_PATH = "/v2/health/ready"
assert READY_PATH in wire.HEALTH_PATHS


class LocalProcessRuntime:
    """`ServingRuntime` of the local profile. Reading needs no running stack (status, logs and endpoints use it);
    starting needs the stack's `endpoints` (the servers' environment)."""

    profile = "local"
    model_runtimes = (SANDBOX_RUNTIME,)  # KServe's own runtimes exist on the Kubernetes profiles only
    reserved_names: frozenset[str] = frozenset()  # deployments have folders and ports of their own
    read_only = None

    def __init__(
        self,
        sandbox: SandboxDir,
        ports: PortMap,
        endpoints: Endpoints | None = None,
        *,
        startup_timeout: float = 120.0,
        scheduler=None,
        inference_log_shipper: str = "server",
    ):
        self.sandbox = sandbox
        self.ports = ports
        self.endpoints = endpoints
        self.startup_timeout = startup_timeout
        self.scheduler = scheduler
        # Who ships the model servers' inference journals: "supervisor" while the sandbox has one (the servers
        # then spend nothing on it), else each server itself (`inference_log.SHIPPER_ENV`).
        self.inference_log_shipper = inference_log_shipper
        # A deploy lets other commands in while its servers start (`_launch`): the checklist's scenarios deploy
        # side by side, and each server takes seconds to answer.
        self.lock = functools.partial(sandbox.lock, releasable=True) if endpoints is not None else unlocked
        self._file = sandbox.root / "deployments.json"

    # ---------------------------------------------------------------- the records

    def records(self) -> dict[str, DeploymentSpec]:
        if not self._file.exists():
            return {}
        raw = json.loads(self._file.read_text())
        return {name: DeploymentSpec(**item) for name, item in raw.items()}

    def _save(self, records: dict[str, DeploymentSpec]) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: d.model_dump() for n, d in records.items()}, indent=2))
        tmp.replace(self._file)

    def tracking_uri(self) -> str:
        stack = self._started_stack()
        log_in_to_mlflow(stack.mlflow_auth_env())
        return stack.mlflow_tracking_uri

    def _started_stack(self) -> Endpoints:
        if self.endpoints is None:
            raise SandboxError("deployments change only on a running sandbox", hint="start it with `sandbox up`")
        return self.endpoints

    def process(self, name: str) -> ManagedProcess:
        folder = self.sandbox.root / "deployments" / name
        return ManagedProcess(
            folder / "service.pid", folder / "service.log", Identity(self.sandbox.home, f"deployment:{name}")
        )

    def log_file(self, name: str) -> Path:
        return self.process(name).log_file

    # ---------------------------------------------------------------- start and stop

    def start(self, records: list[DeploymentSpec], *, replacing: Collection[str] = ()) -> list[str]:
        notes = self._launch(records, replacing=replacing)
        known = self.records()
        known.update({record.name: record for record in records})
        self._save(known)
        return notes

    def restart(self, record: DeploymentSpec) -> str:
        """Start a recorded deployment again, on its ports (the supervisor, after a crash); records nothing."""
        return self._launch([record], replacing={record.name})[0]

    def _launch(self, records: list[DeploymentSpec], *, replacing: Collection[str]) -> list[str]:
        """Launch every server first, then wait for each: model loads overlap instead of queueing."""
        known = self.records()
        for record in records:  # a router's variants' ports must be known before its command line is written
            self.ports.claim(f"deploy.{record.name}", 0, setting="(automatic)")
            if _has_grpc(record):
                self.ports.claim(f"deploy.{record.name}.grpc", 0, setting="(automatic)")
        self.ports.save()
        launched: list[tuple[DeploymentSpec, ManagedProcess]] = []
        try:
            for record in records:
                old = known.get(record.name)
                if old is not None and old.gpus != record.gpus:
                    self._release_gpus(record.name)  # a redeploy with another GPU count is placed afresh
                process = self.process(record.name)
                process.stop()  # replace whatever ran under this name
                process.log_file.parent.mkdir(parents=True, exist_ok=True)
                env = _server_env(self._started_stack())
                env.update(self._gpu_env(record))
                env[SHIPPER_ENV] = self.inference_log_shipper
                keys = (f"deploy.{record.name}", f"deploy.{record.name}.grpc")
                env[PORTS_MARKER] = json.dumps({key: self.ports.get(key) for key in keys if self.ports.get(key)})
                process.start(self._command(record), env=env, cwd=process.log_file.parent)
                launched.append((record, process))
            notes = []
            with released_while_waiting(self.sandbox.lock_file):  # records and ports are written under the lock
                for record, process in launched:
                    base = self._url(record.name)
                    took = wait_ready(
                        f"deployment {record.name}",
                        _ready_probe(base, record.name),
                        process,
                        timeout=self.startup_timeout,
                    )
                    notes.append(f"ready in {took:.1f}s at {base}{self._placement_note(record)}")
        except BaseException:
            for record, process in launched:
                process.stop(timeout=10)
                if record.name not in replacing:
                    self._release_gpus(record.name)
            raise
        return notes

    def stop(self, names: list[str]) -> None:
        """Forget, then stop: the supervisor never finds a recorded deployment without its process (a crash).

        A name whose process could not be stopped is recorded again (and the error raised), so no server runs
        that no record names: `down`, `up` and a second `serve undeploy` still find it."""
        records = self.records()
        forgotten = {name: records.pop(name) for name in names if name in records}
        self._save(records)
        for index, name in enumerate(names):
            try:
                self.process(name).stop(timeout=15)
            except BaseException:
                kept = self.records()
                kept.update({n: forgotten[n] for n in names[index:] if n in forgotten})
                self._save(kept)
                raise
            self._release_gpus(name)

    def _command(self, record: DeploymentSpec) -> list[str]:
        port = self.ports.get(f"deploy.{record.name}")
        if record.kind == "model":
            args = ModelServerArgs(
                name=record.name,
                model_uri=record.model_uri or "",
                host=LOOPBACK,
                port=port,
                grpc_port=self.ports.get(f"deploy.{record.name}.grpc"),
                batch_size=record.batch_size,
                batch_wait_ms=record.batch_wait_ms,
                inference_log=record.inference_log,
                allow_nan=record.allow_nan,
            )
            return [sys.executable, "-m", ModelServerArgs.MODULE, *args.to_argv()]
        variants = tuple(
            RouteVariant(
                v.label, self._url(variant_name(record.name, v.label)), variant_name(record.name, v.label), v.weight
            )
            for v in record.variants
        )
        router = RouterArgs(
            name=record.name, host=LOOPBACK, port=port, variants=variants, sticky_header=record.sticky_header
        )
        return [sys.executable, "-m", RouterArgs.MODULE, *router.to_argv()]

    def start_all(self) -> list[tuple[str, str]]:
        """Restore the recorded deployments (`sandbox up`): variants before their routers."""
        records = self.records()
        results = []
        for kind in ("model", "split"):  # a router needs its variants up
            pending = []
            for record in (r for r in records.values() if r.kind == kind):
                if self.process(record.name).running() is not None and self._healthy(record.name):
                    results.append((record.name, "already running"))
                else:
                    pending.append(record)
            if pending:
                notes = self._launch(pending, replacing=[r.name for r in pending])
                results += [(r.name, note) for r, note in zip(pending, notes, strict=True)]
        return results

    def stop_all(self) -> list[str]:
        """Stop every deployment, keeping the records (`sandbox down`): routers first."""
        ordered = sorted(self.records().values(), key=lambda r: r.kind != "split")
        return [r.name for r in ordered if self.process(r.name).stop(timeout=15)]

    # ---------------------------------------------------------------- GPUs (the inventory's fake devices)

    @staticmethod
    def workload_name(name: str) -> str:
        return f"serve-{name}"

    def _gpu_env(self, record: DeploymentSpec) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for a GPU deployment: its placement, made now if there is none."""
        if not record.gpus:
            return {}
        if self.scheduler is None:
            raise ConfigError("this profile cannot place GPU deployments", hint="deploy without --gpus")
        workload = self.workload_name(record.name)
        placement = self.scheduler.placement(workload)
        if placement is not None and placement.node is not None:
            return placement.env
        decision = self.scheduler.submit(
            Workload(
                name=workload,
                requests={"cpu": "1", "memory": "2Gi"},
                limits={"nvidia.com/gpu": str(record.gpus)},
                tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
            )
        )
        if decision.status != "Scheduled":
            if decision.status == "Pending":
                self.scheduler.release(workload)
            raise SandboxError(
                f"cannot place {record.name} with {record.gpus} GPU(s): {decision.message}",
                hint="free GPUs (`sandbox gpu status`), ask for fewer, or raise the quota in sandbox.yaml",
            )
        return decision.env

    def _placement_note(self, record: DeploymentSpec) -> str:
        if not record.gpus or self.scheduler is None:
            return ""
        placement = self.scheduler.placement(self.workload_name(record.name))
        return f", GPUs {','.join(map(str, placement.devices))} on {placement.node}" if placement else ""

    def _release_gpus(self, name: str) -> None:
        if self.scheduler is not None and self.scheduler.placement(self.workload_name(name)) is not None:
            self.scheduler.release(self.workload_name(name))

    # ---------------------------------------------------------------- reads

    def _url(self, name: str) -> str | None:
        port = self.ports.get(f"deploy.{name}")
        return f"http://{LOOPBACK}:{port}" if port else None

    def address(self, record: DeploymentSpec, *, reach: bool) -> Address | None:
        url = self._url(record.name)  # nothing stands between the host and a local process: reach changes nothing
        if url is None:
            return None
        grpc = self.ports.get(f"deploy.{record.name}.grpc") if _has_grpc(record) else None
        return Address(url=url, grpc=f"{LOOPBACK}:{grpc}" if grpc else None)

    def observe(self, records: list[DeploymentSpec]) -> dict[str, Observed]:
        out = {}
        for record in records:
            proc = self.process(record.name).running()
            if proc is None:
                out[record.name] = Observed("stopped")
            else:
                state = "running" if self._healthy(record.name) else "unhealthy"
                out[record.name] = Observed(state, instance=f"pid {proc.pid}")
        return out

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self._url(name)}{READY_PATH}", timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False


def inference_log_shipper(config) -> str:
    """Who ships the inference journals of a sandbox with this config: its supervisor when `up` starts one."""
    return "supervisor" if config.supervisor.enabled else "server"


def _has_grpc(record: DeploymentSpec) -> bool:
    return record.kind == "model"  # a split's router is REST only


def _server_env(endpoints: Endpoints) -> dict[str, str]:
    """A server's environment: this process's, then the stack's (`sandbox env`). The serving token is the
    stack's alone: with `serving.auth: none` none comes from the caller's environment either (an exported one
    would turn the check on)."""
    env = {key: value for key, value in os.environ.items() if key != wire.SERVING_TOKEN_ENV}
    return {**env, **endpoints.env(), "NO_PROXY": "127.0.0.1,localhost"}


def _ready_probe(base: str, name: str):
    def probe() -> None:
        response = httpx.get(f"{base}{READY_PATH}", timeout=5, trust_env=False)
        response.raise_for_status()

    return probe
