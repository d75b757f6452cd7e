"""The embedded profile: real services as processes on 127.0.0.1, no Docker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from sandbox import files, ui
from sandbox.actions import Action, run_actions
from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError, SandboxError
from sandbox.net import port_is_free
from sandbox.pipelines.runner import LocalPipelineRunner
from sandbox.profiles.base import Check, Profile, ProfileStatus, common_checks, serving_planner
from sandbox.profiles.local import plan as local_plan
from sandbox.profiles.local import provisioned
from sandbox.profiles.local.process import stop_marked
from sandbox.profiles.local.scheduler import LocalScheduler
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.jupyterlab import JupyterLab
from sandbox.profiles.local.services.mlflow_server import ARTIFACTS_BUCKET, MLflowServer
from sandbox.profiles.local.services.postgres import MONITORING_DATABASE, SCHEMA_MARKER, Postgres, find_binaries
from sandbox.profiles.local.services.seaweedfs import SeaweedS3, weed_binary
from sandbox.profiles.local.serving import LocalProcessRuntime, inference_log_shipper
from sandbox.profiles.local.state import (
    PortMap,
    SandboxDir,
    exclusive_lock,
    load_or_create_secrets,
    make_private,
    read_secrets,
)
from sandbox.profiles.local.supervisor.handle import SupervisorHandle, command_lock
from sandbox.serving.deployments import Deployments

# kfp: pipelines run with kfp.local (subprocesses); there is no KFP API server on this profile.
# gpu: admission and placement against the inventory (fake GPU nodes, plus real ones NVML finds).
# monitoring: model servers log inferences to PostgreSQL; drift checks and retraining read them.
CAPABILITIES = ["mlflow", "s3", "postgres", "serving", "kfp", "gpu", "monitoring"]


class LocalProfile(Profile):
    name = "local"
    summary = "real services as processes on 127.0.0.1 (PostgreSQL, SeaweedFS S3, MLflow); no Docker"

    def __init__(self, config):
        super().__init__(config)
        self.sandbox = SandboxDir(config.root)

    # ---------------------------------------------------------------- services

    def _services(self, *, create_secrets: bool) -> tuple[Postgres, SeaweedS3, MLflowServer]:
        """The three core services (JupyterLab, optional, is `_notebooks`)."""
        secrets = load_or_create_secrets(self.sandbox) if create_secrets else read_secrets(self.sandbox)
        if secrets is None:
            raise NotRunningError(
                f"no sandbox in {self.sandbox.root}",
                hint="start one with `sandbox up` (or pass the --dir it was started with)",
            )
        ctx = ServiceContext(self.config, self.sandbox, secrets, PortMap(self.sandbox))
        postgres = Postgres(ctx)
        s3 = SeaweedS3(ctx)
        return postgres, s3, MLflowServer(ctx, postgres, s3)

    def _notebooks(self, services) -> JupyterLab:
        """JupyterLab, its kernels pointed at the stack the core ``services`` make."""
        return JupyterLab(services[0].ctx, lambda: self._endpoints(services, notebooks=False))

    def _notebooks_waiting(self, notebooks: JupyterLab) -> bool:
        """JupyterLab not started yet, its port held by the running supervisor: it starts on the first connection."""
        if notebooks.process.running() is not None or not notebooks.port:
            return False
        return SupervisorHandle(self.sandbox).listening().get(notebooks.name) == notebooks.port

    def _notebooks_reachable(self, notebooks: JupyterLab) -> bool:
        """Running, or waiting for its first use (the URL starts it)."""
        return notebooks.process.running() is not None or self._notebooks_waiting(notebooks)

    def _wanted(self, services) -> list[LocalService]:
        """The services `up` starts: the core three, and JupyterLab unless `notebooks.enabled` is false."""
        return [*services, self._notebooks(services)] if self.config.notebooks.enabled else list(services)

    def service_names(self) -> list[str]:
        return ["postgres", "s3", "mlflow", JupyterLab.name, SupervisorHandle.name]

    def log_file(self, service: str) -> Path:
        if service == SupervisorHandle.name:
            return SupervisorHandle(self.sandbox).log_file
        if service in self.service_names():
            return self.sandbox.service_dir(service) / "service.log"
        deployments = []
        if read_secrets(self.sandbox) is not None:
            runtime = LocalProcessRuntime(self.sandbox, PortMap(self.sandbox))
            deployments = list(runtime.records())
            if service in deployments:
                return runtime.log_file(service)
        raise ConfigError(
            f"unknown service '{service}'",
            hint=f"choose one of: {', '.join(self.service_names() + deployments)}",
        )

    def logs(self, service: str, *, lines: int = 50, follow: bool = False) -> Iterator[str]:
        path = self.log_file(service)
        if not path.exists():
            raise SandboxError(f"no log yet for '{service}' at {path}", hint="start the sandbox with `sandbox up`")
        text = files.tail(path, lines)
        if text:
            yield text + "\n"
        if follow:
            yield from files.follow(path)

    # ---------------------------------------------------------------- protocol

    def preflight(self) -> list[Check]:
        checks = common_checks(self.config)
        pg_cfg = self.config.postgres
        try:
            binaries = find_binaries(pg_cfg.source, pg_cfg.bin_dir)
            checks.append(
                Check("PostgreSQL server", True, f"{binaries.version()} ({binaries.source}: {binaries.bin_dir})")
            )
        except SandboxError as exc:
            checks.append(Check("PostgreSQL server", False, exc.message, fix=exc.hint or ""))
        try:
            checks.append(Check("SeaweedFS (weed)", True, str(weed_binary())))
        except SandboxError as exc:
            checks.append(Check("SeaweedFS (weed)", False, exc.message, fix=exc.hint or ""))
        for setting, port in (
            ("postgres.port", pg_cfg.port),
            ("s3.port", self.config.s3.port),
            ("mlflow.port", self.config.mlflow.port),
            ("notebooks.port", self.config.notebooks.port if self.config.notebooks.enabled else 0),
        ):
            if port:
                free = port_is_free(port)
                checks.append(
                    Check(
                        f"Port {port} ({setting})",
                        free,
                        "free" if free else "in use",
                        fix=f"free it or change {setting} (0 picks a free port)",
                        # A running sandbox holds its own ports; that is not a problem.
                        required=not self.sandbox.secrets_file.exists(),
                    )
                )
        if not any(c.name.startswith("Port") for c in checks):
            checks.append(Check("Ports", True, "chosen automatically per sandbox dir (15000-22000, 25000-32000)"))
        return checks

    def up(self, *, keep: bool = False) -> Endpoints:
        fresh = not self.sandbox.exists()
        with command_lock(self.sandbox, "up"):
            core = self._services(create_secrets=True)
            services = self._wanted(core)
            # A sandbox made before its files were private (or loosened since) is tightened on each start.
            tightened = make_private(self.sandbox.root, traverse=services[0].traverse_dirs())
            if tightened:
                ui.err.print(
                    f"Made {len(tightened)} file(s) and folder(s) in {self.sandbox.root} private to their owner"
                )
            running = [svc for svc in services if svc.process.running() is not None and svc.healthy()]
            if not self.config.notebooks.enabled:
                self._stop_disabled_notebooks(core)
            else:
                notebooks = services[-1]
                if self._notebooks_waiting(notebooks):
                    if notebooks.on_first_use:
                        running.append(notebooks)  # waiting for its first use is its running state
                    else:
                        self._release_notebooks_port()
            if len(running) == len(services) and self._deployments_running():
                ui.err.print(f"Sandbox in {self.sandbox.root} is already running; nothing changed.")
                self._supervise()
                return self.endpoints()
            try:
                self._preflight_for_start(services, running)
            except SandboxError:
                if fresh and not keep:
                    shutil.rmtree(self.sandbox.root, ignore_errors=True)
                raise
            run_actions(self.actions(services, keep=keep), keep=keep)
            self._supervise()
        return self.endpoints()

    def _supervise(self) -> None:
        """Last in `up`: start the supervisor, or have the running one re-read its settings and clear its marks."""
        with ui.step(SupervisorHandle.title) as step:
            step.note = SupervisorHandle(self.sandbox).ensure(self.config, self.endpoints())

    def _release_notebooks_port(self) -> None:
        """`notebooks.start: up` (or no supervisor) now, but the supervisor holds the port waiting for a first use:
        stopped, so `up` can start JupyterLab on it (the supervisor is started again last)."""
        with ui.step("Stopping the supervisor (it holds JupyterLab's port; `up` starts JupyterLab now)") as step:
            step.note = "stopped" if SupervisorHandle(self.sandbox).stop() else "was not running"

    def _stop_disabled_notebooks(self, core) -> None:
        notebooks = self._notebooks(core)
        if notebooks.process.running() is not None:
            with ui.step(f"Stopping {notebooks.title} (notebooks.enabled: false)") as step:
                step.note = "stopped" if notebooks.stop() else "was not running"

    def actions(self, services: list[LocalService], *, keep: bool = False) -> list[Action]:
        """Bring-up, listed in order, run at once where nothing is waited for (`Action.after`): PostgreSQL, S3 and
        JupyterLab from the start (a kernel needs the stack's addresses, known before anything starts, not its
        servers); the inference log's schema as soon as PostgreSQL answers; MLflow once its backend store does (it
        reaches S3 only when artifacts move); the deployments once MLflow, S3 and the schema are there."""
        postgres, s3, mlflow = services[:3]
        waits = {postgres.title: (), s3.title: (), mlflow.title: (postgres.title,), JupyterLab.title: ()}
        steps = [
            self._first_use_action(svc, after=waits[svc.title])
            if isinstance(svc, JupyterLab) and svc.on_first_use
            else self._service_action(svc, keep=keep, after=waits[svc.title])
            for svc in services
        ]
        steps.insert(
            1,
            Action(
                local_plan.SCHEMA_TITLE,
                run=lambda: _ensure_inference_log_schema(postgres),
                done=lambda: _inference_log_schema_made(postgres),
                after=(postgres.title,),
            ),
        )
        steps.append(
            Action(
                local_plan.DEPLOYMENTS_TITLE,
                run=self._restore_deployments,
                undo=lambda: self._serving_runtime().stop_all(),
                done=self._deployments_done,
                after=(local_plan.SCHEMA_TITLE, s3.title, mlflow.title),
            )
        )
        return steps

    def plan(self) -> list[Action]:
        """`up --dry-run`: the actions `up` runs, in order, then the supervisor it starts last, each title saying
        what it starts and where (`local/plan.py`). Starts nothing and writes nothing, not even the sandbox dir."""
        services = self._wanted(local_plan.planned_services(self.config, self.sandbox))
        steps = [*self.actions(services), Action(SupervisorHandle.title, run=self._supervise)]
        return local_plan.annotated(steps, local_plan.notes(services, self.config, self.sandbox))

    def _service_action(self, svc: LocalService, *, keep: bool = False, after: tuple[str, ...] = ()) -> Action:
        def done() -> str | None:
            proc = svc.process.running()
            return f"already running (pid {proc.pid})" if proc is not None and svc.healthy() else None

        def run() -> str:
            recovered = ""
            if svc.process.running() is not None:
                svc.stop()  # up but not answering: restart it, on the ports it had
                svc.claim_ports()
                recovered = "restarted an unhealthy process"
            elif svc.process.record() is not None:
                recovered = "recovered from a crash"
            prepared = svc.prepare()
            try:
                ready = svc.start()
            except BaseException:
                if not keep:  # the failed action is not among those undone: its half-started server goes now
                    svc.stop()
                raise
            return ", ".join(part for part in (svc.describe(), prepared, recovered, ready) if part)

        return Action(svc.title, run=run, undo=svc.stop, done=done, after=after)

    def _first_use_action(self, svc: JupyterLab, *, after: tuple[str, ...] = ()) -> Action:
        """JupyterLab with `notebooks.start: first-use`: prepared (workspace, kernelspec; its port was claimed
        before), not started. The supervisor `up` starts last listens on the port and starts it on the first
        connection (`supervisor/activation.py`); once started it runs until `down`."""

        def done() -> str | None:
            proc = svc.process.running()
            if proc is not None and svc.healthy():
                return f"already running (pid {proc.pid})"
            return f"waiting: starts on first use at {svc.url()}" if self._notebooks_waiting(svc) else None

        def run() -> str:
            if svc.process.running() is not None:
                svc.stop()  # up but not answering: the next connection starts it afresh
            prepared = svc.prepare()
            waiting = f"waiting: starts on first use at {svc.url()} (the supervisor listens)"
            return ", ".join(part for part in (svc.describe(), prepared, waiting) if part)

        return Action(svc.title, run=run, undo=svc.stop, done=done, after=after)

    def _deployments_done(self) -> str | None:
        if not self._serving_runtime().records():
            return "none recorded"
        return "all running" if self._deployments_running() else None

    def _restore_deployments(self) -> str:
        restored = self._serving_runtime().start_all()
        return ", ".join(f"{name}: {note.split(' at ')[0]}" for name, note in restored)

    def _deployments_running(self) -> bool:
        try:
            serving = self.serving()
        except NotRunningError:
            return True  # no deployments are possible before the services run
        return all(status.state == "running" for status in serving.statuses())

    def _preflight_for_start(self, services, running) -> None:
        """Everything that can fail before a process is started: binaries, ports."""
        postgres = services[0]
        if postgres not in running:
            postgres.binaries  # noqa: B018 - raises PreflightError when none are found
        weed_binary()
        for svc in services:
            if isinstance(svc, JupyterLab) and svc in running:
                continue  # waiting for its first use: the port is the supervisor's, held for it
            # A process of ours that runs but does not answer keeps its ports: its action restarts it on them.
            if svc.process.running() is None:
                svc.reap_leftovers()
                svc.claim_ports()
        services[0].ctx.ports.save()

    def down(self, *, purge: bool = False, keep_cluster: bool = False) -> None:
        if keep_cluster:
            raise ConfigError(
                f"--keep-cluster applies to a profile that creates a cluster, not to {self.name}",
                hint="drop --keep-cluster",
            )
        if not self.sandbox.exists():
            ui.err.print(f"No sandbox in {self.sandbox.root}; nothing to stop.")
            return
        with command_lock(self.sandbox, "down"):
            with ui.step("Stopping the supervisor") as step:  # first: nothing restarts what is stopped next
                step.note = "stopped" if SupervisorHandle(self.sandbox).stop() else "was not running"
            if read_secrets(self.sandbox) is not None:
                services = self._services(create_secrets=False)
                notebooks = self._notebooks(services)
                if notebooks.process.running() is not None or notebooks.kernels():
                    with ui.step(f"Stopping {notebooks.title}") as step:
                        step.note = "stopped (and its kernels)" if notebooks.stop() else "was not running"
                serving = self._runtime_for(services)
                if serving.records():
                    with ui.step("Stopping model deployments") as step:
                        stopped = serving.stop_all()
                        step.note = f"stopped {', '.join(stopped)}" if stopped else "none was running"
                for svc in reversed(services):
                    with ui.step(f"Stopping {svc.title}") as step:
                        step.note = "stopped" if svc.stop() else "was not running"
            # Whatever no pid file led to (a corrupt one, a deployment no longer recorded): found by its marker.
            strays = stop_marked(self.sandbox.home)
            if strays:
                ui.err.print(f"Stopped {len(strays)} more process(es) of this sandbox: {_describe(strays)}")
                if read_secrets(self.sandbox) is not None:
                    for svc in services:
                        svc.clean_up_after_stop()  # what a stray left outside the sandbox dir (weed's sockets)
            if purge and read_secrets(self.sandbox) is not None:
                services[0].purge_external_data()
            if purge:
                with ui.step(f"Deleting {self.sandbox.root}"):
                    shutil.rmtree(self.sandbox.root)

    def status(self) -> ProfileStatus:
        result = ProfileStatus(profile=self.name, dir=str(self.sandbox.root))
        if read_secrets(self.sandbox) is None:
            return result
        services = self._services(create_secrets=False)
        result.services = [svc.status() for svc in services]
        notebooks = self._notebooks(services)
        if self.config.notebooks.enabled or notebooks.process.running() is not None:
            result.services.append(notebooks.status(waiting=self._notebooks_waiting(notebooks)))
        open_to_others = make_private(self.sandbox.root, traverse=services[0].traverse_dirs(), dry_run=True)
        if open_to_others:
            result.warnings.append(
                f"{len(open_to_others)} file(s) or folder(s) in {self.sandbox.root} are open to other users"
                f" (e.g. {open_to_others[0]}); `sandbox up` makes them private again"
            )
        supervisor = SupervisorHandle(self.sandbox).status()
        if supervisor is not None:
            result.services.append(supervisor)
        result.endpoints = self._endpoints(services)
        if result.endpoints is not None:
            result.deployments = Deployments(self._runtime_for(services)).statuses()
        return result

    def endpoints(self) -> Endpoints:
        services = self._services(create_secrets=False)
        down = [svc.title for svc in services if svc.process.running() is None]
        if down:
            raise NotRunningError(
                f"the sandbox in {self.sandbox.root} is not running ({', '.join(down)} stopped)",
                hint="start it with `sandbox up`",
            )
        return self._endpoints(services)

    def lock(self, command: str):
        """The sandbox dir's lock (`state.exclusive_lock`): refused at once, exit 3, naming the holder."""
        return exclusive_lock(self.sandbox, command)

    def claim_port(self, key: str, configured: int, *, setting: str) -> int:
        """The port kept in the sandbox's `ports.json` under ``key``: the next run gets the same one."""
        ports = PortMap(self.sandbox)
        port = ports.claim(key, configured, setting=setting)
        ports.save()
        return port

    def scheduler(self) -> LocalScheduler:
        """Admission and placement on the inventory; state kept in the sandbox dir."""
        return LocalScheduler(self.config.gpu, self.sandbox.root)

    def pipelines(self) -> LocalPipelineRunner:
        """kfp.local against this stack's MLflow and S3; each run's log and artifacts under `<dir>/pipelines/`."""
        return LocalPipelineRunner(self.endpoints(), self.sandbox.root / "pipelines")

    def serving(self) -> Deployments:
        """Deployments need MLflow running; the registry is where models come from."""
        return serving_planner(self.config, self._serving_runtime())

    def _serving_runtime(self) -> LocalProcessRuntime:
        return self._runtime_for(self._services(create_secrets=False), require_running=True)

    def _runtime_for(self, services, *, require_running: bool = False) -> LocalProcessRuntime:
        endpoints = self._endpoints(services)
        if endpoints is None or (require_running and services[2].process.running() is None):
            raise NotRunningError(
                f"the sandbox in {self.sandbox.root} is not running", hint="start it with `sandbox up`"
            )
        return LocalProcessRuntime(
            self.sandbox,
            services[0].ctx.ports,
            endpoints,
            startup_timeout=self.config.startup_timeout,
            scheduler=self.scheduler(),
            inference_log_shipper=inference_log_shipper(self.config),
        )

    def _endpoints(self, services, *, notebooks: bool = True) -> Endpoints | None:
        postgres, s3, mlflow = services
        if not (postgres.port and s3.port and mlflow.port):
            return None
        secrets = postgres.ctx.secrets
        jupyter = self._notebooks(services) if notebooks else None
        return Endpoints(
            profile=self.name,
            mlflow_tracking_uri=mlflow.url(),
            mlflow_username=mlflow.credentials()[0],
            mlflow_password=mlflow.credentials()[1],
            s3_endpoint_url=s3.url(),
            s3_access_key=secrets.s3_access_key,
            s3_secret_key=secrets.s3_secret_key,
            buckets=list(self.config.s3.buckets),
            artifacts_bucket=ARTIFACTS_BUCKET,
            postgres_url=postgres.connection_url(),
            monitoring_db_url=postgres.monitoring_url(),
            capabilities=CAPABILITIES,
            inference=Deployments(LocalProcessRuntime(self.sandbox, postgres.ctx.ports)).inference_endpoints(),
            serving_token=secrets.serving_token if self.config.serving.auth == "token" else None,
            notebooks_url=jupyter.tokened_url() if jupyter is not None and self._notebooks_reachable(jupyter) else None,
            sandbox_env={"SANDBOX_PROFILE": self.name, "SANDBOX_DIR": str(self.sandbox.root)},
        )


def _describe(procs) -> str:
    names = []
    for proc in procs:
        try:
            names.append(f"{proc.pid} {proc.name()}")
        except Exception:  # noqa: BLE001 - it is gone; the pid says enough
            names.append(str(proc.pid))
    return ", ".join(names)


def _schema_marker(postgres: Postgres) -> tuple[Path, dict | None]:
    """The schema's marker and what it records: the table's SQL, its owner, in which cluster."""
    from sandbox.serving.inference_log import SCHEMA

    cluster = postgres.cluster_identity()
    wanted = {
        "cluster": cluster,
        "database": MONITORING_DATABASE,
        "owner": postgres.ctx.secrets.mlflow_db_user,
        "schema_sha256": provisioned.digest(SCHEMA),
    }
    return postgres.dir / SCHEMA_MARKER, wanted if cluster is not None else None


def _inference_log_schema_made(postgres: Postgres) -> str | None:
    """`done`: this cluster has the table, as this version of the sandbox makes it (its marker says so)."""
    marker, wanted = _schema_marker(postgres)
    return "table inference_log made by an earlier start" if wanted and provisioned.matches(marker, wanted) else None


def _ensure_inference_log_schema(postgres: Postgres) -> str:
    """The inference log's table, made by its owner (the application role), before any writer."""
    import psycopg

    from sandbox.serving.inference_log import ensure_schema

    marker, wanted = _schema_marker(postgres)
    provisioned.forget(marker)
    with psycopg.connect(postgres.monitoring_url(), connect_timeout=3, autocommit=True) as conn:
        ensure_schema(conn)
    if wanted is not None:
        provisioned.record(marker, wanted)
    return "table inference_log ready"
