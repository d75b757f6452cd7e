"""What the kind and cluster profiles share: state, preflight, up/down/status/logs/endpoints, plan and render.

A subclass says where the cluster comes from (`_context`, `_target`, `_check_context`) and what
`down` removes. `up` first does everything that can fail without side effects (configuration,
context, the preflight's tools), so a refused `up` leaves nothing behind, not even the sandbox
dir; then it keeps its state in `<dir>/kube/`: `state.json` (instance id, context, cluster, host
ports chosen once and kept), `secrets.json` (0600, generated once), `timings.json` (each action's
seconds from the last `up`, for `benchmarks/kind_actions.py`), `sandbox.lock` (0600, `sandbox.profiles.locking`):
`up`, `down`, `serve deploy|split|undeploy` and `gpu submit|release` and the quotas take it, so no
two of them overlap; a second one is refused at once (exit 3), naming the holder. Reads take none.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox import ui
from sandbox.actions import Action, ActionResult, run_actions
from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError, PreflightError
from sandbox.files import write_private
from sandbox.net import LOOPBACK, free_port, port_is_free
from sandbox.profiles import locking
from sandbox.profiles.base import Check, Profile, ProfileStatus, ServiceState, ServiceStatus, common_checks
from sandbox.profiles.kube import actions, diagnostics, invariants, manifests, preflight, validate, versions
from sandbox.profiles.kube import serving as kube_serving
from sandbox.profiles.kube.pipelines import runner_for
from sandbox.profiles.kube.portforward import PortForwards
from sandbox.profiles.kube.scheduler import KubeScheduler, remove_workloads
from sandbox.profiles.kube.status import component_statuses, pod_logs
from sandbox.profiles.kube.tools import ToolError, Tools

# Serving on KServe (kube/serving.py), pipelines on KFP (kube/pipelines.py), GPUs on the real scheduler
# (kube/scheduler.py): the same capabilities as the local profile.
CAPABILITIES = ["mlflow", "s3", "postgres", "serving", "kfp", "gpu", "monitoring"]
CAPABILITY_FIXES: dict[str, str] = {}


@dataclasses.dataclass
class KubeState:
    instance: str
    context: str
    namespace: str
    host_ports: dict[str, int]
    cluster: str | None = None  # the kind cluster this sandbox created
    image: str | None = None  # the project's image `up` built or named: what later deploys and runs use


class KubeProfile(Profile):
    tool_names: tuple[str, ...] = ("kubectl", "helm")

    # ------------------------------------------------------------------ what a subclass says

    @abc.abstractmethod
    def _namespace(self) -> str: ...

    @abc.abstractmethod
    def _new_state(self, instance: str, host_ports: dict[str, int]) -> KubeState: ...

    @abc.abstractmethod
    def _target(self, state: KubeState, spec: Any, tools: Tools) -> actions.Target: ...

    def _check_context(self) -> None:
        """Refuse a configuration that must not touch anything (the cluster profile's context rules)."""

    def _object_store(self) -> str:
        return "seaweedfs"

    def _image(self) -> str:
        return versions.project_image()

    def _expose(self) -> str:
        return "NodePort"

    def _configured_ports(self) -> dict[str, int]:
        return {}

    # ------------------------------------------------------------------ state

    @property
    def folder(self) -> Path:
        return self.config.root / "kube"

    def _read_state(self) -> KubeState | None:
        try:
            return KubeState(**json.loads((self.folder / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self, state: KubeState) -> None:
        write_private(self.folder / "state.json", json.dumps(dataclasses.asdict(state), indent=1))

    def _secrets(self, *, create: bool) -> Any:
        path = self.folder / "secrets.json"
        try:
            return manifests.StackSecrets(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            if not create:
                return None
        generated = manifests.StackSecrets.generate()
        write_private(path, json.dumps(dataclasses.asdict(generated)))
        return generated

    def _spec(self, state: KubeState, stack_secrets: Any, *, image: str | None = None) -> Any:
        """The stack as rendered. Its image: the one given (a plan's, fresh), else the one `up` recorded, so
        a deploy after a code change still names the image the nodes hold."""
        return manifests.StackSpec(
            instance=state.instance,
            secrets=stack_secrets,
            image=image or state.image or self._image(),
            timeouts=self.config.kube.timeouts,
            namespace=state.namespace,
            expose=self._expose(),
            object_store=self._object_store(),
            notebooks=self.config.notebooks.enabled,
            buckets=tuple(self.config.s3.buckets),
            gpu=self._gpu(),
        )

    def _gpu(self) -> Any:
        """The GPU inventory the stack is rendered from (kind adds this machine's real GPUs to it)."""
        return self.config.gpu

    def _host_ports(self, kept: dict[str, int] | None = None) -> dict[str, int]:
        """A loopback port per exposed service: configured, else kept from the last `up`, else a free one."""
        ports = dict(kept or {})
        for key in manifests.NodePorts().as_dict():
            configured = self._configured_ports().get(key, 0)
            if configured:
                ports[key] = configured
            elif not ports.get(key):
                ports[key] = free_port()
        return ports

    def _fresh_state(self) -> KubeState:
        instance = manifests.stack_id(f"{self.config.root.name}-{secrets.token_hex(3)}")
        return self._new_state(instance, self._host_ports())

    # ------------------------------------------------------------------ the protocol

    def preflight(self) -> list[Check]:
        checks = common_checks(self.config)
        checks += preflight.tool_checks(self.tool_names)
        if "docker" in self.tool_names:
            checks += preflight.architecture_checks()
            checks += preflight.docker_daemon_checks()
            checks += preflight.resource_checks(self.config.root)
            checks += preflight.inotify_checks()
        return checks

    def require_preflight(self) -> None:
        """Every missing prerequisite with its fix, before anything is written (exit 5)."""
        self._check_context()
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
            try:
                return self._up(keep=keep)
            except BaseException:
                # A first `up` that failed and was undone leaves no state for `serve`, `gpu` or `status` to act
                # on; with --keep the half-made stack stays, and so does its state (`diagnose`, `down`).
                if fresh and not keep:
                    (self.folder / "state.json").unlink(missing_ok=True)
                raise

    def _up(self, *, keep: bool) -> Endpoints:
        state = self._read_state() or self._fresh_state()
        state.host_ports = self._host_ports(state.host_ports)
        state.image = self._image()  # this checkout's: a changed build context is a new image
        self._refuse_taken_ports(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_state(state)
        spec = self._spec(state, self._secrets(create=True))
        target = self._target(state, spec, Tools(state.context))
        plan = actions.bring_up(target)
        invariants.check_plan(plan, spec.timeouts)
        results = run_actions(plan, keep=keep, diagnose=actions.diagnose(target))
        if keep:
            ui.err.print(f"Diagnose it with `sandbox diagnose --profile {self.name}`.")
        self._write_timings(results)
        self._after_up(state, target)
        return self.endpoints()

    def _refuse_taken_ports(self, state: KubeState) -> None:
        """Before a cluster exists, its host ports must be free (afterwards kind itself holds them)."""

    def _after_up(self, state: KubeState, target: actions.Target) -> None:
        """After the actions: the cluster profile starts its port-forwards."""

    def _write_timings(self, results: list[ActionResult]) -> None:
        rows = [dataclasses.asdict(result) for result in results]
        write_private(self.folder / "timings.json", json.dumps(rows, indent=1))

    def plan(self) -> list[Action]:
        """The actions `up` would run, each with its exact commands, checked against the plan invariants
        (`kube/invariants.py`); reads and writes nothing."""
        self._check_context()
        state = self._read_state() or self._fresh_state()
        stack_secrets = self._secrets(create=False) or manifests.StackSecrets.generate()
        spec = self._spec(state, stack_secrets, image=self._image())
        plan = actions.bring_up(self._target(state, spec, Tools(state.context)))
        invariants.check_plan(plan, spec.timeouts)
        return list(plan)

    def render(self, out: Path) -> list[Path]:
        """Every manifest and values file `up` applies, into ``out``, validated first."""
        self._check_context()
        state = self._read_state() or self._fresh_state()
        stack_secrets = self._secrets(create=False) or manifests.StackSecrets.generate()
        spec = self._spec(state, stack_secrets, image=self._image())
        invariants.check_plan(actions.bring_up(self._target(state, spec, Tools(state.context))), spec.timeouts)
        kind_config = self._kind_config(state, spec)
        problems = validate.validate_all(spec, kind_config=kind_config, host_ports=state.host_ports)
        if problems:
            raise ConfigError(
                f"{len(problems)} rendered object(s) are invalid: {problems[0]}",
                hint="this is a bug in the manifests (sandbox/profiles/kube/manifests.py); nothing was written",
                details="\n".join(problems),
            )
        return manifests.render(spec, out, kind_config=kind_config, host_ports=state.host_ports)

    def _kind_config(self, state: KubeState, spec: Any) -> dict[str, Any] | None:
        return None

    def down(self, *, purge: bool = False, keep_cluster: bool = False) -> None:
        # Nothing to remove, nothing locked: no folder is made for the lock file.
        with self.lock("down") if self._read_state() is not None else contextlib.nullcontext():
            state = self._read_state()  # read again under the lock: another `down` may have gone first
            if state is None:
                ui.err.print(f"No {self.name} sandbox in {self.config.root}; nothing to remove.")
                return
            # The deployments' port-forwards, whatever `_remove` does.
            forwards = PortForwards(Tools(state.context), state.namespace, self.folder / "forwards")
            kube_serving.stop_all_forwards(forwards)
            self._remove(state, keep_cluster=keep_cluster)
            if not keep_cluster:  # a kept cluster is still this sandbox's: a later `down` deletes it
                # What ran is gone: the next `up` starts afresh (the generated secrets are kept, as data is).
                (self.folder / "state.json").unlink(missing_ok=True)
            if purge:
                import shutil

                if keep_cluster:  # the cluster is still this sandbox's: keep what names it (and its host ports)
                    for path in self.folder.iterdir():
                        if path.name not in ("state.json", "sandbox.lock"):
                            if path.is_dir():
                                shutil.rmtree(path)
                            else:
                                path.unlink(missing_ok=True)
                else:
                    shutil.rmtree(self.folder, ignore_errors=True)  # the lock file too: it is released on leaving

    @abc.abstractmethod
    def _remove(self, state: KubeState, *, keep_cluster: bool) -> None: ...

    def remove_stack(self, state: KubeState) -> None:
        """Delete only what carries this sandbox's labels: never CRDs, cluster-scoped objects or an upstream
        install's objects. In KFP's namespace that is the sandbox's own NodePort Service and pipeline Secret;
        KFP's object-store Secret is KFP's and stays, with the sandbox's keys, which KFP's SeaweedFS now holds
        (the stock well-known keys are not restored); a later `up` finds it and rotates again if its keys differ."""
        tools = Tools(state.context)
        selector = self._selector(state)
        kinds = [
            "inferenceservices",  # first: KServe's own Deployments and Services under them go with them
            "deployments",
            "statefulsets",
            "jobs",
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "resourcequotas",
            "limitranges",
            "networkpolicies",
            "serviceaccounts",  # the kserve-mlserver runtime's S3 ServiceAccount
        ]
        quota_namespaces = [
            q.namespace for q in self.config.gpu.quotas if q.namespace not in ("default", state.namespace)
        ]
        kept: list[str] = []
        with ui.step(f"Delete the stack's objects in {state.namespace} ({selector})"):
            tools.run(tools.delete_labelled(kinds, namespace=state.namespace, selector=selector))
            for namespace in dict.fromkeys(quota_namespaces):
                tools.run(
                    tools.delete_labelled(["resourcequotas", "limitranges"], namespace=namespace, selector=selector)
                )
            kept = remove_workloads(tools, state.instance)  # what `sandbox gpu` made, in any namespace
            tools.run(
                tools.delete_labelled(
                    ["secrets", "jobs", "services", "networkpolicies"],
                    namespace=versions.KFP_NAMESPACE,
                    selector=selector,
                )
            )
        if kept:
            ui.err.print(f"Kept namespace(s) {', '.join(kept)}: the sandbox made them, but they hold others' pods.")

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
        spec = self._spec(state, self._secrets(create=False) or manifests.StackSecrets.generate())
        tools = Tools(state.context)
        namespaces = actions.namespaces(self._target(state, spec, tools))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = out or self.folder / f"diagnostics-{stamp}.tar.gz"
        with ui.step(f"Events, pod descriptions and logs of {', '.join(namespaces)}") as step:
            files = diagnostics.collect(tools, namespaces)
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
        result = ProfileStatus(profile=self.name, dir=str(self.config.root))
        state = self._read_state()
        if state is None:
            return result
        urls = self._urls(state)
        try:
            result.services = component_statuses(
                Tools(state.context), state.namespace, self._selector(state), urls, state.host_ports
            )
        except ToolError as exc:  # the cluster or its context is gone: say so, as a stopped stack
            detail = (exc.details or exc.message).splitlines()[-1]
            result.services = [
                ServiceStatus("cluster", state.context, ServiceState.STOPPED, None, None, None, detail=detail)
            ]
            return result
        # A deployment's predictor and router pods are listed as deployments, not as stack services.
        result.services = [s for s in result.services if s.name != kube_serving.COMPONENT]
        if result.services:
            result.endpoints = self._endpoints(state)
            try:
                result.deployments = self._serving(state).statuses()
            except ToolError as exc:
                result.warnings.append(f"deployments not read: {(exc.details or exc.message).splitlines()[-1]}")
        return result

    def _selector(self, state: KubeState) -> str:
        return f"app.kubernetes.io/managed-by={manifests.MANAGED_BY},app.kubernetes.io/instance={state.instance}"

    def _urls(self, state: KubeState) -> dict[str, str]:
        ports = state.host_ports
        return {
            manifests.MLFLOW: f"http://{LOOPBACK}:{ports['mlflow']}",
            manifests.S3: f"http://{LOOPBACK}:{ports['s3']}",
            manifests.NOTEBOOKS: f"http://{LOOPBACK}:{ports['notebooks']}/lab",
        }

    def _running_state(self) -> KubeState:
        """The kept state of a stack `up` made, or NotRunningError saying how to start one."""
        state = self._read_state()
        if state is None:
            raise NotRunningError(f"no {self.name} sandbox in {self.config.root}", hint="start it with `sandbox up`")
        return state

    def _stack_secrets(self) -> manifests.StackSecrets:
        """The stack's generated secrets, or NotRunningError when `up` has not written them."""
        stack_secrets = self._secrets(create=False)
        if stack_secrets is None:
            raise NotRunningError(
                f"the {self.name} sandbox in {self.config.root} has no secrets file", hint="run `sandbox up`"
            )
        return stack_secrets

    def endpoints(self) -> Endpoints:
        state = self._running_state()
        return self._endpoints(state)

    def _endpoints(self, state: KubeState) -> Endpoints:
        stack_secrets = self._stack_secrets()
        ports = state.host_ports
        database = f"{LOOPBACK}:{ports['postgres']}"
        password = stack_secrets.postgres_password
        return Endpoints(
            profile=self.name,
            mlflow_tracking_uri=f"http://{LOOPBACK}:{ports['mlflow']}",
            s3_endpoint_url=f"http://{LOOPBACK}:{ports['s3']}",
            s3_access_key=stack_secrets.s3_access_key,
            s3_secret_key=stack_secrets.s3_secret_key,
            buckets=list(self.config.s3.buckets),
            artifacts_bucket=manifests.ARTIFACTS_BUCKET,
            postgres_url=f"postgresql://{manifests.DB_USER}:{password}@{database}/{manifests.DATABASE}",
            monitoring_db_url=f"postgresql://{manifests.DB_USER}:{password}@{database}/{manifests.MONITORING_DATABASE}",
            capabilities=CAPABILITIES,
            capability_fixes=CAPABILITY_FIXES,
            inference=self._inference(state),
            notebooks_url=(
                f"http://{LOOPBACK}:{ports['notebooks']}/lab?token={stack_secrets.jupyter_token}"
                if self.config.notebooks.enabled
                else None
            ),
            sandbox_env={"SANDBOX_PROFILE": self.name, "SANDBOX_DIR": str(self.config.root)},
        )

    def serving(self) -> kube_serving.KubeServing:
        """InferenceServices (KServe, Standard mode) in the stack's namespace."""
        state = self._running_state()
        return self._serving(state)

    def _serving(self, state: KubeState) -> kube_serving.KubeServing:
        stack_secrets = self._stack_secrets()
        return kube_serving.KubeServing(
            self._spec(state, stack_secrets),
            Tools(state.context),
            self.folder,
            tracking_uri=lambda: self.endpoints().mlflow_tracking_uri,
            lock=self.lock,
            ready_timeout_s=self.config.kube.timeouts.inference_service,
        )

    def _inference(self, state: KubeState) -> dict:
        """The deployments' endpoints (through their port-forwards); none when the API cannot be read."""
        try:
            return self._serving(state).inference_endpoints()
        except ToolError:
            return {}

    def pipelines(self):
        """Pipelines on the cluster's KFP (`kube/pipelines.py`), reached on 127.0.0.1."""
        state = self._running_state()
        image = self.config.pipelines
        if "base_image" not in image.model_fields_set:  # the default: the image this profile built or was given
            image = image.model_copy(update={"base_image": state.image or self._image()})
        spec, port = self._spec(state, self._stack_secrets()), state.host_ports[manifests.KFP]
        endpoints = self._endpoints(state)
        return runner_for(state.context, port, spec, image, endpoints, forwards_folder=self.folder / "forwards")

    def scheduler(self):
        """Real Pods against the cluster's ResourceQuota admission and kube-scheduler (`kube.scheduler`)."""
        state = self._running_state()
        return KubeScheduler(Tools(state.context), instance=state.instance, namespace=state.namespace, lock=self.lock)

    def service_names(self) -> list[str]:
        names = [manifests.POSTGRES, manifests.S3, manifests.MLFLOW]
        return names + ([manifests.NOTEBOOKS] if self.config.notebooks.enabled else [])

    def logs(self, service: str, *, lines: int = 50, follow: bool = False) -> Iterator[str]:
        state = self._running_state()
        if service not in self.service_names() and not any(c in service for c in ",=/ "):
            serving = self._serving(state)
            if serving.log_selector(service) is not None:  # a deployment: its predictor's (or router's) pods
                return serving.logs(service, lines=lines, follow=follow)
        return pod_logs(
            Tools(state.context), state.namespace, self._selector(state), service, lines=lines, follow=follow
        )


def refuse_taken(ports: dict[str, int], setting: str) -> None:
    taken = {key: port for key, port in ports.items() if not port_is_free(port)}
    if taken:
        raise PreflightError(
            "host port(s) already in use: " + ", ".join(f"{key} {port}" for key, port in taken.items()),
            hint=f"free them, or choose others with {setting} (0 picks a free one)",
        )
