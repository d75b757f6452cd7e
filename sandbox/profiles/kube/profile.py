"""What the kind and cluster profiles share: state, preflight, up/down/status/logs/endpoints, plan and render.

`KubeProfile` is one class made of two strategies: where the cluster comes from (`source`, `kube/source.py`:
the context, the plan's first actions, the project's image, what `down` removes) and how the host reaches it
(`reach`, `kube/reach.py`: every loopback port, NodePorts or port-forwards). `bundle` renders what `up` applies
once, from one `StackSpec`; the plan, `--render` and the offline validation all read it.

`up` first does everything that can fail without side effects (configuration, context, the preflight's tools),
so a refused `up` leaves nothing behind, not even the sandbox dir; then it keeps its state in `<dir>/kube/`:
`state.json` (instance id, context, cluster, every host port, chosen once and kept), `secrets.json` (0600,
generated once), `timings.json` (each action's seconds from the last `up`, for `benchmarks/kind_actions.py`),
`sandbox.lock` (0600, `sandbox.profiles.locking`): `up`, `down`, `serve deploy|split|undeploy` and `gpu
submit|release` and the quotas take it, so no two of them overlap; a second one is refused at once (exit 3),
naming the holder. Reads take none, and start nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from sandbox import ui
from sandbox.actions import Action, ActionResult, run_actions
from sandbox.config import SandboxConfig
from sandbox.endpoints import Endpoints, log_in_to_mlflow
from sandbox.errors import ConfigError, NotRunningError, PreflightError
from sandbox.files import write_private
from sandbox.profiles import locking
from sandbox.profiles.base import (
    Check,
    Profile,
    ProfileStatus,
    ServiceState,
    ServiceStatus,
    common_checks,
    serving_planner,
)
from sandbox.profiles.kube import actions, diagnostics, invariants, preflight, validate
from sandbox.profiles.kube.manifests import bundle as stack_bundle
from sandbox.profiles.kube.manifests.bundle import Bundle
from sandbox.profiles.kube.manifests.serving import COMPONENT as SERVING_COMPONENT
from sandbox.profiles.kube.manifests.spec import (
    ARTIFACTS_BUCKET,
    DATABASE,
    DB_USER,
    MLFLOW,
    MONITORING_DATABASE,
    NOTEBOOKS,
    POSTGRES,
    S3,
    StackSecrets,
    StackSpec,
    instance_selector,
    stack_id,
)
from sandbox.profiles.kube.pipelines import KfpPipelineRunner
from sandbox.profiles.kube.plan import KubeAction, Site
from sandbox.profiles.kube.reach import STACK_PORTS, Reach, url
from sandbox.profiles.kube.scheduler import KubeScheduler
from sandbox.profiles.kube.serving import KServeRuntime
from sandbox.profiles.kube.source import Source
from sandbox.profiles.kube.state import KubeState, StateFile
from sandbox.profiles.kube.status import component_statuses, pod_logs
from sandbox.profiles.kube.tools import ToolError, Tools
from sandbox.serving.deployments import Deployments

# Serving on KServe (kube/serving.py), pipelines on KFP (kube/pipelines.py), GPUs on the real scheduler
# (kube/scheduler.py): the same capabilities as the local profile.
CAPABILITIES = ["mlflow", "s3", "postgres", "serving", "kfp", "gpu", "monitoring"]
CAPABILITY_FIXES: dict[str, str] = {}

__all__ = ["KubeProfile", "KubeState"]


class KubeProfile(Profile):
    """The stack on Kubernetes: ``source`` says where the cluster comes from, ``reach`` how the host reaches it."""

    def __init__(self, config: SandboxConfig, *, source: Source, reach: Reach):
        super().__init__(config)
        self.source = source
        self.reach = reach
        self.state_file = StateFile(self.folder)

    # ------------------------------------------------------------------ state

    @property
    def folder(self) -> Path:
        return self.config.root / "kube"

    def _read_state(self) -> KubeState | None:
        return self.state_file.read()

    def _write_state(self, state: KubeState) -> None:
        self.state_file.write(state)

    def _secrets(self, *, create: bool) -> StackSecrets | None:
        """The generated secrets `up` kept; ``create``: made and kept now when there are none."""
        path = self.folder / "secrets.json"
        try:
            saved = json.loads(path.read_text())
            kept = StackSecrets.kept(saved)
            if create and set(saved) != set(dataclasses.asdict(kept)):
                write_private(path, json.dumps(dataclasses.asdict(kept)))  # the new secrets join, kept from now
            return kept
        except (OSError, ValueError, TypeError):
            if not create:
                return None
        generated = StackSecrets.generate()
        write_private(path, json.dumps(dataclasses.asdict(generated)))
        return generated

    def _kept_secrets(self) -> StackSecrets:
        """The secrets `up` uses: those kept, else new ones, kept from now on."""
        return self._secrets(create=True) or StackSecrets.generate()  # never None once created

    def _spec(self, state: KubeState, stack_secrets: StackSecrets, *, image: str | None = None) -> StackSpec:
        """The stack as rendered. Its image: the one given (a plan's, fresh), else the one `up` recorded, so
        a deploy after a code change still names the image the nodes hold."""
        return StackSpec(
            instance=state.instance,
            secrets=stack_secrets,
            image=image or state.image or self.source.image(),
            timeouts=self.config.kube.timeouts,
            namespace=state.namespace,
            object_store=self.source.object_store,
            notebooks=self.config.notebooks.enabled,
            buckets=tuple(self.config.s3.buckets),
            gpu=self.source.gpu(),
            host_ports={key: port for key, port in state.host_ports.items() if key in STACK_PORTS},
            serving_auth=self.config.serving.auth,
        )

    def _fresh_state(self) -> KubeState:
        instance = stack_id(f"{self.config.root.name}-{secrets.token_hex(3)}")
        return self.source.new_state(instance, self.reach.host_ports({}))

    def bundle(self, state: KubeState, spec: StackSpec) -> Bundle:
        """What `up` applies, rendered once: the stack's parts (`manifests.bundle.COMPONENTS`), with the source's
        own (kind's cluster config), as the host reaches them (NodePorts, or none)."""
        return self.reach.expose(self.source.complete(stack_bundle.bundle(spec), state), state)

    def _site(self, state: KubeState, spec: StackSpec) -> Site:
        return Site(Tools(state.context), spec, self.folder, health_url=lambda: self.reach.health_url(state))

    def _plan(self, state: KubeState, spec: StackSpec) -> tuple[Site, Bundle, list[KubeAction]]:
        """The plan `up` runs and `--dry-run` prints, checked against the plan invariants (`kube/invariants.py`)."""
        site, bundle = self._site(state, spec), self.bundle(state, spec)
        plan = actions.bring_up(site, bundle, self.source, state)
        invariants.check_plan(plan, spec.timeouts)
        return site, bundle, plan

    # ------------------------------------------------------------------ the protocol

    def preflight(self) -> list[Check]:
        return [*common_checks(self.config), *preflight.tool_checks(self.source.tool_names), *self.source.preflight()]

    def require_preflight(self) -> None:
        """Every missing prerequisite with its fix, before anything is written (exit 5)."""
        self.source.check()
        checks = self.preflight()
        missing = preflight.failed(checks)
        warnings = [c for c in checks if not c.ok and not c.required]
        lines = [f"  ✗ {c.name}: {c.detail}. Fix: {c.fix}" for c in missing]
        lines += [f"  ! {c.name} (warning): {c.detail}. Fix: {c.fix}" for c in warnings]
        if missing:
            raise PreflightError(
                f"the {self.name} profile needs {len(missing)} thing(s) this machine lacks: "
                + ", ".join(check.name for check in missing),
                hint="install or start each one as its line below says, then run `sandbox up` again "
                "(`sandbox doctor --profile " + self.name + "` checks again); nothing was created",
                details="\n".join(lines),
            )
        for line in lines:
            ui.err.print(line, markup=False)

    def lock(self, command: str) -> contextlib.AbstractContextManager:
        """`<dir>/kube/sandbox.lock` (0600): `up`, `down` and the backends' changes run under it (exit 3 if taken)."""
        return locking.exclusive_lock(self.folder / "sandbox.lock", command, folder=self.config.root)

    def up(self, *, keep: bool = False) -> Endpoints:
        self.require_preflight()  # first: a refused `up` leaves nothing behind, not even the lock file
        with self.lock("up"):
            fresh = self._read_state() is None
            state = self._read_state() or self._fresh_state()
            try:
                return self._up(state, keep=keep)
            except BaseException:
                if not keep:  # what the readiness probe may have started (port-forwards)
                    self.reach.stop_stack(state)
                # A first `up` that failed and was undone leaves no state for `serve`, `gpu` or `status` to act
                # on; with --keep the half-made stack stays, and so does its state (`diagnose`, `down`).
                if fresh and not keep:
                    self.state_file.forget()
                raise

    def _up(self, state: KubeState, *, keep: bool) -> Endpoints:
        state.host_ports = self.reach.host_ports(state.host_ports)
        state.image = self.source.image()  # this checkout's: a changed build context is a new image
        self.reach.check_ports(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_state(state)
        site, bundle, plan = self._plan(state, self._spec(state, self._kept_secrets()))
        touched = actions.namespaces(site, bundle, self.source)
        results = run_actions(plan, keep=keep, diagnose=actions.diagnose(site.tools, touched))
        if keep:
            ui.err.print(f"Diagnose it with `sandbox diagnose --profile {self.name}`.")
        self._write_timings(results)
        started = self.reach.open_stack(state)
        if started:
            ui.err.print(f"Port-forwards on 127.0.0.1 started: {', '.join(started)}")
        return self.endpoints()

    def _write_timings(self, results: list[ActionResult]) -> None:
        rows = [dataclasses.asdict(result) for result in results]
        write_private(self.folder / "timings.json", json.dumps(rows, indent=1))

    def _planned(self) -> tuple[KubeState, StackSpec]:
        """The state and spec a plan or a render is made from, without writing either: from configuration, and
        what an earlier `up` kept (its instance, host ports and secrets)."""
        self.source.check()
        state = self._read_state() or self._fresh_state()
        stack_secrets = self._secrets(create=False) or StackSecrets.generate()
        return state, self._spec(state, stack_secrets, image=self.source.image())

    def plan(self) -> list[Action]:
        """The actions `up` would run, each with its exact commands, checked against the plan invariants
        (`kube/invariants.py`); reads and writes nothing."""
        state, spec = self._planned()
        return list(self._plan(state, spec)[2])

    def render(self, out: Path) -> list[Path]:
        """Every manifest and values file `up` applies (the bundle), into ``out``, validated first."""
        state, spec = self._planned()
        _, bundle, _ = self._plan(state, spec)
        problems = validate.validate_bundle(bundle)
        if problems:
            raise ConfigError(
                f"{len(problems)} rendered object(s) are invalid: {problems[0]}",
                hint="this is a bug in the manifests (sandbox/profiles/kube/manifests/); nothing was written",
                details="\n".join(problems),
            )
        return stack_bundle.render(bundle, out)

    def down(self, *, purge: bool = False, keep_cluster: bool = False) -> None:
        # Nothing to remove, nothing locked: no folder is made for the lock file.
        with self.lock("down") if self._read_state() is not None else contextlib.nullcontext():
            state = self._read_state()  # read again under the lock: another `down` may have gone first
            if state is None:
                ui.err.print(f"No {self.name} sandbox in {self.config.root}; nothing to remove.")
                return
            self.reach.close(state)  # every port-forward, whatever the source removes
            self.source.remove(state, keep_cluster=keep_cluster)
            if not keep_cluster:  # a kept cluster is still this sandbox's: a later `down` deletes it
                # What ran is gone: the next `up` starts afresh (the generated secrets are kept, as data is).
                self.state_file.forget()
            if purge:
                if keep_cluster:  # the cluster is still this sandbox's: keep what names it (and its host ports)
                    for path in self.folder.iterdir():
                        if path.name not in ("state.json", "sandbox.lock"):
                            if path.is_dir():
                                shutil.rmtree(path)
                            else:
                                path.unlink(missing_ok=True)
                else:
                    shutil.rmtree(self.folder, ignore_errors=True)  # the lock file too: it is released on leaving

    def diagnose(self, out: Path | None = None) -> Path:
        """One archive (`kube/diagnostics.py`) of events, pod descriptions and logs from every namespace the
        plan touches; NotRunningError when there is no stack or no cluster to read."""
        state = self._read_state()
        if state is None:
            raise NotRunningError(
                f"no {self.name} sandbox in {self.config.root}: nothing to diagnose",
                hint="a failed `sandbox up` keeps its cluster for this only with --keep "
                "(`make sandbox PROFILE=kind` passes it)",
            )
        self._require_cluster(state)
        spec = self._spec(state, self._secrets(create=False) or StackSecrets.generate())
        site = self._site(state, spec)
        namespaces = actions.namespaces(site, self.bundle(state, spec), self.source)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = out or self.folder / f"diagnostics-{stamp}.tar.gz"
        with ui.step(f"Events, pod descriptions and logs of {', '.join(namespaces)}") as step:
            files = diagnostics.collect(site.tools, namespaces)
            diagnostics.write_archive(files, path, folder=f"{self.name}-diagnostics-{stamp}")
            step.note = f"{len(files)} files"
        return path

    def _require_cluster(self, state: KubeState) -> None:
        """The cluster the state names answers, or NotRunningError saying it is gone."""
        try:
            # /version answers any authenticated client, whether or not the stack's namespace exists yet.
            tools = Tools(state.context)
            tools.run(tools.kubectl("version", "-o", "json", mutates=False, timeout_s=30))
        except ToolError as exc:
            detail = (exc.details or exc.message).strip().splitlines()[-1]
            raise NotRunningError(
                f"the {self.name} sandbox's cluster (context {state.context}) cannot be read: {detail}",
                hint="it is gone or not reachable; `sandbox down` forgets it",
            ) from None

    def status(self) -> ProfileStatus:
        """What runs, read from the API; starts nothing (a port-forward that is not running is not started)."""
        result = ProfileStatus(profile=self.name, dir=str(self.config.root))
        state = self._read_state()
        if state is None:
            return result
        selector = instance_selector(state.instance)
        try:
            result.services = component_statuses(
                Tools(state.context), state.namespace, selector, self._urls(state), state.host_ports
            )
        except ToolError as exc:  # the cluster or its context is gone: say so, as a stopped stack
            detail = (exc.details or exc.message).splitlines()[-1]
            result.services = [
                ServiceStatus("cluster", state.context, ServiceState.STOPPED, None, None, None, detail=detail)
            ]
            return result
        # A deployment's predictor and router pods are listed as deployments, not as stack services.
        result.services = [s for s in result.services if s.name != SERVING_COMPONENT]
        if result.services:
            result.endpoints = self._endpoints(state, reach=False)
            try:
                result.deployments = serving_planner(self.config, self._runtime(state, reach=False)).statuses()
            except ToolError as exc:
                result.warnings.append(f"deployments not read: {(exc.details or exc.message).splitlines()[-1]}")
        return result

    def _urls(self, state: KubeState) -> dict[str, str]:
        ports = state.host_ports
        return {
            MLFLOW: url(ports["mlflow"]),
            S3: url(ports["s3"]),
            NOTEBOOKS: f"{url(ports['notebooks'])}/lab",
        }

    def _running_state(self) -> KubeState:
        """The kept state of a stack `up` made, or NotRunningError saying how to start one."""
        state = self._read_state()
        if state is None:
            raise NotRunningError(f"no {self.name} sandbox in {self.config.root}", hint="start it with `sandbox up`")
        return state

    def _stack_secrets(self) -> StackSecrets:
        """The stack's generated secrets, or NotRunningError when `up` has not written them."""
        stack_secrets = self._secrets(create=False)
        if stack_secrets is None:
            raise NotRunningError(
                f"the {self.name} sandbox in {self.config.root} has no secrets file", hint="run `sandbox up`"
            )
        return stack_secrets

    def endpoints(self) -> Endpoints:
        """The stack's and every deployment's endpoints on 127.0.0.1, what reaches them made sure to run."""
        state = self._running_state()
        self.reach.open_stack(state)  # a dead forward comes back
        return self._endpoints(state, reach=True)

    def _endpoints(self, state: KubeState, *, reach: bool) -> Endpoints:
        stack_secrets = self._stack_secrets()
        ports = state.host_ports
        database = f"127.0.0.1:{ports['postgres']}"
        password = stack_secrets.postgres_password
        return Endpoints(
            profile=self.name,
            mlflow_tracking_uri=url(ports["mlflow"]),
            mlflow_username=stack_secrets.MLFLOW_ADMIN_USER,
            mlflow_password=stack_secrets.mlflow_admin_password,
            s3_endpoint_url=url(ports["s3"]),
            s3_access_key=stack_secrets.s3_access_key,
            s3_secret_key=stack_secrets.s3_secret_key,
            buckets=list(self.config.s3.buckets),
            artifacts_bucket=ARTIFACTS_BUCKET,
            postgres_url=f"postgresql://{DB_USER}:{password}@{database}/{DATABASE}",
            monitoring_db_url=f"postgresql://{DB_USER}:{password}@{database}/{MONITORING_DATABASE}",
            capabilities=CAPABILITIES,
            capability_fixes=CAPABILITY_FIXES,
            inference=self._inference(state, reach=reach),
            serving_token=stack_secrets.serving_token if self.config.serving.auth == "token" else None,
            notebooks_url=(
                f"{url(ports['notebooks'])}/lab?token={stack_secrets.jupyter_token}"
                if self.config.notebooks.enabled
                else None
            ),
            sandbox_env={"SANDBOX_PROFILE": self.name, "SANDBOX_DIR": str(self.config.root)},
        )

    def serving(self) -> Deployments:
        """The serving control plane over KServe InferenceServices (Standard mode) in the stack's namespace."""
        return serving_planner(self.config, self._runtime(self._running_state()))

    def _runtime(self, state: KubeState, *, reach: bool = True) -> KServeRuntime:
        """The KServe runtime of the stack ``state`` names; ``reach``: it may start port-forwards (False: a read)."""
        return KServeRuntime(
            self.name,
            self._spec(state, self._stack_secrets()),
            Tools(state.context),
            self.reach,
            state,
            tracking_uri=lambda: self._tracking_uri(state),
            lock=self.lock,
            ready_timeout_s=self.config.kube.timeouts.inference_service,
            start_forwards=reach,
        )

    def _tracking_uri(self, state: KubeState) -> str:
        """MLflow on the host (the registry lookups of a deploy): what reaches it made sure to run."""
        self.reach.open_stack(state)
        log_in_to_mlflow(self._stack_secrets().mlflow_auth_env())
        return url(state.host_ports["mlflow"])

    def _inference(self, state: KubeState, *, reach: bool) -> dict:
        """The deployments' endpoints (``reach``: their port-forwards made sure to run; else only those whose
        ports are kept); none when the API cannot be read."""
        try:
            return serving_planner(self.config, self._runtime(state, reach=reach)).inference_endpoints()
        except ToolError:
            return {}

    def pipelines(self) -> KfpPipelineRunner:
        """Pipelines on the cluster's KFP (`kube/pipelines.py`), reached on 127.0.0.1 as the reach says."""
        state = self._running_state()
        image = self.config.pipelines
        if "base_image" not in image.model_fields_set:  # the default: the image this profile built or was given
            image = image.model_copy(update={"base_image": state.image or self.source.image()})
        spec = self._spec(state, self._stack_secrets())
        api, how = self.reach.kfp_api(state)
        endpoints = self._endpoints(state, reach=False)
        return KfpPipelineRunner(
            api=api, image=image, spec=spec, tools=Tools(state.context), endpoints=endpoints, reach=how
        )

    def scheduler(self) -> KubeScheduler:
        """Real Pods against the cluster's ResourceQuota admission and kube-scheduler (`kube.scheduler`)."""
        state = self._running_state()
        return KubeScheduler(Tools(state.context), instance=state.instance, namespace=state.namespace, lock=self.lock)

    def service_names(self) -> list[str]:
        names = [POSTGRES, S3, MLFLOW]
        return names + ([NOTEBOOKS] if self.config.notebooks.enabled else [])

    def logs(self, service: str, *, lines: int = 50, follow: bool = False) -> Iterator[str]:
        state = self._running_state()
        if service not in self.service_names() and not any(c in service for c in ",=/ "):
            runtime = self._runtime(state, reach=False)
            if runtime.log_selector(service) is not None:  # a deployment: its predictor's (or router's) pods
                return runtime.logs(service, lines=lines, follow=follow)
        selector = instance_selector(state.instance)
        return pod_logs(Tools(state.context), state.namespace, selector, service, lines=lines, follow=follow)
