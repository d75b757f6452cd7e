"""What the supervisor watches: the sandbox's services and recorded deployments, as `supervisor.loop.Component`s.

Each restarts by the code `up` runs for it (`LocalService.prepare` and `start`; the serving runtime's restart of
one record), on the ports in ports.json, never new ones. `LocalComponents` reads the sandbox's files afresh on
every call: the three services, JupyterLab when enabled, then model servers before the routers in front of them.
JupyterLab with `notebooks.start: first-use` is an `ActivatedComponent`: the supervisor listens on its port and
starts it on the first connection (`activation.py`).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.endpoints import Endpoints
from sandbox.errors import PortInUseError, SandboxError
from sandbox.net import port_is_free
from sandbox.profiles.local.scheduler import LocalScheduler
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.jupyterlab import JupyterLab
from sandbox.profiles.local.services.mlflow_server import MLflowServer
from sandbox.profiles.local.services.postgres import Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3
from sandbox.profiles.local.serving import LocalProcessRuntime, inference_log_shipper
from sandbox.profiles.local.state import PortMap, SandboxDir, read_secrets
from sandbox.profiles.local.supervisor.activation import Activations, ListeningSocket
from sandbox.profiles.local.supervisor.loop import Component
from sandbox.serving.specs import DeploymentSpec, variant_name

SERVICES = ("postgres", "s3", "mlflow")  # what every deployment needs running before it is restarted


class ServiceComponent:
    """PostgreSQL, S3 or MLflow, restarted as `up` starts it."""

    def __init__(self, svc: LocalService, depends_on: tuple[str, ...] = ()):
        self.svc = svc
        self.name = svc.name
        self.depends_on = depends_on

    def pid(self) -> int | None:
        proc = self.svc.process.running()
        return proc.pid if proc is not None else None

    def restart(self) -> str:
        self.svc.reap_leftovers()  # what is left of the crashed group (MLflow's worker holds its port)
        for key in self.svc.port_keys():
            port = self.svc.ctx.ports.get(key)
            if port and not port_is_free(port):
                raise PortInUseError(f"port {port} ({key}) is held by another process", hint="free it")
        try:
            return ", ".join(note for note in (self.svc.prepare(), self.svc.start()) if note)
        except BaseException:
            self.svc.stop()  # nothing half-started is left behind, as `up` undoes a failed start
            raise

    def abort(self) -> None:
        self.svc.stop()

    def log_files(self) -> list[Path]:
        return [self.svc.process.log_file]


class ActivatedComponent(ServiceComponent):
    """A service the supervisor starts on its first connection (JupyterLab with `notebooks.start: first-use`).

    It waits (`demand` "waiting") while nothing connects; a queued connection makes it "wanted" and the loop
    starts it at once, on the socket held in ``held`` (`activation.ListeningSocket`). Once seen running it is an
    ordinary component: a crash is restarted (backoff, crash-loop limit) on that same socket."""

    def __init__(self, svc: JupyterLab, held: ListeningSocket, depends_on: tuple[str, ...] = ()):
        super().__init__(svc, depends_on)
        self.held = held

    def pid(self) -> int | None:
        found = super().pid()
        if found is not None:
            self.held.started = True  # seen running (whoever started it): a crash from now on is restarted
        return found

    def demand(self) -> str | None:
        """ "waiting" (not started, nothing connects), "wanted" (a connection waits) or None (it ran: as any)."""
        if self.held.started or self.svc.process.running() is not None:
            self.held.started = True
            return None
        try:
            self.held.open()
        except PortInUseError:
            return None  # someone else holds the port: the ordinary path tries (and says why it cannot)
        self.held.seen_pending = self.held.pending()
        return "wanted" if self.held.seen_pending else "waiting"

    def restart(self) -> str:
        self.svc.reap_leftovers()  # a crashed server's kernels
        listening = self.held.open()  # the same socket, or a new one when a former supervisor held it
        try:
            notes = [self.svc.prepare(), self.svc.start_on(listening)]
        except BaseException:
            self.svc.stop()  # the checks failed or it did not come up: stopped, and the loop logs why
            raise
        self.held.started, self.held.seen_pending = True, False
        return ", ".join(note for note in notes if note)


class DeploymentComponent:
    """A model server or a router, restarted as `up` restores a recorded deployment."""

    def __init__(self, runtime: LocalProcessRuntime, record: DeploymentSpec, depends_on: tuple[str, ...]):
        self.runtime = runtime
        self.record = record
        self.name = record.name
        self.depends_on = depends_on
        self.process = runtime.process(record.name)

    def pid(self) -> int | None:
        proc = self.process.running()
        return proc.pid if proc is not None else None

    def restart(self) -> str:
        self.process.stop(timeout=10)  # what is left of its group after the crash
        main = f"deploy.{self.name}"
        for key in (main, f"{main}.grpc"):
            port = self.runtime.ports.get(key)
            if port is None and key == main:
                raise SandboxError(f"no port recorded for {self.name}", hint="`sandbox up` starts it afresh")
            if port is not None and not port_is_free(port):
                # Never another port: clients hold this URL. `up` restarts it once the port is free.
                raise PortInUseError(f"port {port} ({key}) is held by another process", hint="free it")
        return self.runtime.restart(self.record)

    def abort(self) -> None:
        self.process.stop(timeout=10)

    def log_files(self) -> list[Path]:
        return [self.process.log_file]


class LocalComponents:
    """The sandbox's components as its files say now: the three services, then the recorded deployments."""

    def __init__(
        self,
        sandbox: SandboxDir,
        config: SandboxConfig,
        endpoints: Endpoints | None,
        activations: Activations | None = None,
    ):
        self.sandbox = sandbox
        self.config = config
        self.endpoints = endpoints
        self.activations = activations if activations is not None else Activations()

    def __call__(self) -> list[Component]:
        secrets = read_secrets(self.sandbox)
        if secrets is None:
            return []
        ports = PortMap(self.sandbox)
        ctx = ServiceContext(self.config, self.sandbox, secrets, ports)
        postgres, s3 = Postgres(ctx), SeaweedS3(ctx)
        found: list[Component] = [
            ServiceComponent(postgres),
            ServiceComponent(s3),
            ServiceComponent(MLflowServer(ctx, postgres, s3), ("postgres", "s3")),
        ]
        if self.endpoints is None:
            self.activations.close()
            return found
        activated: set[str] = set()
        if self.config.notebooks.enabled:
            # Its kernels' environment is the stack's endpoints, as `up` recorded them.
            endpoints = self.endpoints
            notebooks = JupyterLab(ctx, lambda: endpoints)
            if notebooks.on_first_use and notebooks.port:
                activated.add(notebooks.name)
                found.append(ActivatedComponent(notebooks, self.activations.get(notebooks.name, notebooks.port)))
            else:
                found.append(ServiceComponent(notebooks))
        self.activations.keep_only(activated)  # disabled, or `notebooks.start: up` since: the port is let go
        runtime = LocalProcessRuntime(
            self.sandbox,
            ports,
            self.endpoints,
            startup_timeout=self.config.startup_timeout,
            scheduler=LocalScheduler(self.config.gpu, self.sandbox.root),
            inference_log_shipper=inference_log_shipper(self.config),
        )
        records = runtime.records()
        for kind in ("model", "split"):  # a router needs its variants
            for record in (r for r in records.values() if r.kind == kind):
                variants = tuple(variant_name(record.name, v.label) for v in record.variants)
                found.append(DeploymentComponent(runtime, record, SERVICES + variants))
        return found
