"""One thin runner for the command-line tools the Kubernetes profiles drive: kind, kubectl, helm, docker.

Every helper builds a `Command` (its exact argv, and the YAML it sends on stdin) that `Tools.run`
executes with captured output and a timeout; the same `Command` is what `--dry-run` prints. kubectl
and helm always get the context explicitly (`--context`, `--kube-context`): the user's current
context is never used implicitly. A failing command raises `ToolError` with its command line and
its own output.

What executes a `Command` is a `Runner`: `SubprocessRunner` (the real tools, as subprocesses) unless a
`Tools` is handed another. `DEFAULT_RUNNER` is the one every `Tools` built without one uses: the unit tests
swap the FAKE tools in there (tests/fakes), in one place.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from sandbox.errors import ServiceStartError

DEFAULT_TIMEOUT_S = 300.0
OUTPUT_TAIL = 40  # lines of a failing command's output an error carries


class ToolError(ServiceStartError):
    """A kind/kubectl/helm/docker command failed: its command line and its own output travel with it."""

    def __init__(self, command: Command, returncode: int | None, output: str):
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL:])
        super().__init__(
            f"`{command.line}` {status}",
            hint=_hint(command.argv[0], output),
            details=tail or "(no output)",
        )
        self.command = command
        self.returncode = returncode
        self.output = output


def _hint(tool: str, output: str) -> str:
    lowered = output.lower()
    if "too many open files" in lowered:
        return "raise fs.inotify.max_user_watches (524288) and max_user_instances (512): see docs/kind.md"
    if "cannot connect to the docker daemon" in lowered:
        return "start the Docker daemon and check `docker info`"
    if "context" in lowered and "does not exist" in lowered:
        return "name an existing context (`kubectl config get-contexts`)"
    return f"read {tool}'s output above; `sandbox up --keep` leaves what was made for debugging"


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    stdin: str | None = None  # YAML sent to the tool (kubectl apply -f -)
    timeout_s: float = DEFAULT_TIMEOUT_S
    mutates: bool = True  # False for reads (get, version): what a dry-run may still do
    stdin_note: str = ""  # what the stdin holds, for the plan (the objects, never their values)

    @property
    def line(self) -> str:
        return shlex.join(self.argv) + (f" <<EOF ({self.stdin_note or 'manifests'})" if self.stdin is not None else "")


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first `v1.2.3`-like version in a tool's output, as numbers."""
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def version_text(version: Sequence[int]) -> str:
    return ".".join(map(str, version))


class Runner(Protocol):
    """What executes a `Command`; errors as `subprocess` raises them, `Tools` turns them into `ToolError`."""

    def run(self, command: Command) -> subprocess.CompletedProcess[str]:
        """Run to the end, output captured; FileNotFoundError when the tool is not installed, and
        subprocess.TimeoutExpired past ``command.timeout_s``."""
        ...

    def stream(self, command: Command) -> Iterator[str]:
        """stdout and stderr together, line by line as they come; ended with the caller's iteration."""
        ...

    def start(self, command: Command, log: Path) -> int:
        """Start a command that runs until it is stopped (`kubectl port-forward`) in its own session, its output
        appended to ``log``; its pid."""
        ...


class SubprocessRunner:
    """The real tools, each call a subprocess."""

    def run(self, command: Command) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command.argv),
            input=command.stdin,
            capture_output=True,
            text=True,
            timeout=command.timeout_s,
            check=False,
        )

    def stream(self, command: Command) -> Iterator[str]:
        with subprocess.Popen(
            list(command.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            assert process.stdout is not None
            yield from process.stdout

    def start(self, command: Command, log: Path) -> int:
        # Its own session: stopping it (killpg) ends it alone, and it outlives the command that started it.
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                list(command.argv), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        return process.pid


# Every `Tools` built without a runner uses this one: the unit tests swap in the FAKE tools here (tests/fakes).
DEFAULT_RUNNER: Runner = SubprocessRunner()


class Tools:
    """The four tools against one kube context (None before a kind cluster exists), run by ``runner``
    (`DEFAULT_RUNNER` unless given)."""

    def __init__(
        self, context: str | None = None, *, runner: Runner | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ):
        self.context = context
        self.runner = runner if runner is not None else DEFAULT_RUNNER  # read now: a swapped default applies
        self.timeout_s = timeout_s

    # ------------------------------------------------------------------ running

    def run(self, command: Command, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = self.runner.run(command)
        except FileNotFoundError:
            raise ToolError(command, 127, f"{command.argv[0]}: command not found") from None
        except subprocess.TimeoutExpired as exc:
            raise ToolError(command, None, _text(exc.stdout) + _text(exc.stderr)) from None
        if check and result.returncode != 0:
            raise ToolError(command, result.returncode, result.stdout + result.stderr)
        return result

    def stream(self, command: Command) -> Iterator[str]:
        """The command's output (stdout and stderr), line by line as it comes (`kubectl logs -f`); ended with
        the caller's iteration."""
        return self.runner.stream(command)

    def start(self, command: Command, log: Path) -> int:
        """Start a command that runs until it is stopped (`kubectl port-forward`): see `Runner.start`."""
        return self.runner.start(command, log)

    def output(self, command: Command) -> str:
        return self.run(command).stdout

    def succeeds(self, command: Command) -> bool:
        try:
            return self.run(command, check=False).returncode == 0
        except ToolError:
            return False

    # ------------------------------------------------------------------ building

    def kubectl(self, *args: str, stdin: str | None = None, mutates: bool = True, timeout_s: float | None = None):
        if not self.context:
            raise ValueError("kubectl needs an explicit context")  # never the user's current one
        return Command(("kubectl", "--context", self.context, *args), stdin, timeout_s or self.timeout_s, mutates)

    def helm(self, *args: str, mutates: bool = True, timeout_s: float | None = None) -> Command:
        if not self.context:
            raise ValueError("helm needs an explicit context")
        return Command(("helm", "--kube-context", self.context, *args), None, timeout_s or self.timeout_s, mutates)

    def kind(self, *args: str, mutates: bool = True, timeout_s: float | None = None) -> Command:
        return Command(("kind", *args), None, timeout_s or self.timeout_s, mutates)

    def docker(self, *args: str, mutates: bool = True, timeout_s: float | None = None) -> Command:
        return Command(("docker", *args), None, timeout_s or self.timeout_s, mutates)

    # ------------------------------------------------------------------ kubectl helpers

    def apply(self, objects: Iterable[dict[str, Any]], *, dry_run: bool = False) -> Command:
        """Server-side apply of ``objects`` sent on stdin; ``dry_run``: the server validates, stores nothing."""
        objects = list(objects)
        documents = yaml.safe_dump_all(objects, sort_keys=False)
        args = ["apply", "--server-side", "--field-manager=ml-sandbox", "--force-conflicts", "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        command = self.kubectl(*args, stdin=documents, mutates=not dry_run)
        shown = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        return dataclasses.replace(command, stdin_note=shown)

    def apply_kustomize(self, url: str, *, timeout_s: int) -> Command:
        return self.kubectl("apply", "--server-side", "--force-conflicts", "-k", url, timeout_s=timeout_s)

    def get(self, kind: str, name: str | None = None, *, namespace: str | None = None, selector: str = ""):
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return self.kubectl(*args, mutates=False, timeout_s=60)

    def get_json(self, kind: str, name: str | None = None, **where: Any) -> dict[str, Any] | None:
        """The object (or list) as JSON; None when it does not exist."""
        result = self.run(self.get(kind, name, **where), check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise ToolError(self.get(kind, name, **where), result.returncode, result.stdout + result.stderr)
        return json.loads(result.stdout or "null")

    def wait(
        self, target: str, condition: str, *, namespace: str | None = None, selector: str = "", timeout_s: int = 300
    ) -> Command:
        """`kubectl wait --for=condition=...`: CRDs Established, jobs Complete, pods Ready (all, or by label).

        Pods of finished Jobs are never Ready: waiting for pods leaves them out.
        """
        args = ["wait", target, f"--for={condition}", f"--timeout={timeout_s}s"]
        if namespace:
            args += ["-n", namespace]
        if target == "pods":
            args += ["-l", selector] if selector else ["--all"]
            args.append("--field-selector=status.phase!=Succeeded")
        return self.kubectl(*args, mutates=False, timeout_s=timeout_s + 30)

    def rollout_status(self, target: str, *, namespace: str, timeout_s: int = 300) -> Command:
        return self.kubectl(
            "rollout",
            "status",
            target,
            "-n",
            namespace,
            f"--timeout={timeout_s}s",
            mutates=False,
            timeout_s=timeout_s + 30,
        )

    def patch_node_status(self, node: str, patch: list[dict[str, Any]]) -> Command:
        return self.kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p", json.dumps(patch))

    def delete_labelled(self, kinds: Sequence[str], *, namespace: str, selector: str) -> Command:
        """Delete only what carries ``selector``, in one namespace: never CRDs or cluster-scoped objects."""
        return self.kubectl(
            "delete", ",".join(kinds), "-n", namespace, "-l", selector, "--ignore-not-found", "--wait=false"
        )

    def delete_namespace(self, namespace: str) -> Command:
        return self.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")

    def logs(
        self, target: str | None = None, *, namespace: str, lines: int, selector: str = "", follow: bool = False
    ) -> Command:
        """A pod's (``target``) or the labelled pods' (``selector``) last lines; ``follow`` keeps streaming."""
        args = ["logs", *([target] if target else []), "-n", namespace, f"--tail={lines}", "--all-containers"]
        args += ["--prefix", *(["-l", selector] if selector else []), *(["-f"] if follow else [])]
        return self.kubectl(*args, mutates=False, timeout_s=60)

    def failing_pods_report(self, namespace: str, *, lines: int = 20) -> str:
        """Events and last log lines of the pods in ``namespace`` that are not Ready: for a failure's details."""
        pods = (self.get_json("pods", namespace=namespace) or {}).get("items", [])
        return "\n".join(self.pod_report(pod, namespace, lines=lines) for pod in pods if not pod_ready(pod))

    def pod_report(self, pod: dict, namespace: str, *, lines: int = 20) -> str:
        """One pod's phase, events (oldest first) and last log lines, as a failure's details show them."""
        name = pod["metadata"]["name"]
        phase = pod.get("status", {}).get("phase", "?")
        events = self.run(
            self.kubectl(
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                f"involvedObject.name={name}",
                "--sort-by=.lastTimestamp",
                mutates=False,
                timeout_s=60,
            ),
            check=False,
        )
        log = self.run(self.logs(name, namespace=namespace, lines=lines), check=False)
        return (
            f"--- pod {name} ({phase})\nevents:\n{events.stdout.strip() or '(none)'}\n"
            f"last log lines:\n{(log.stdout + log.stderr).strip() or '(none)'}"
        )

    # ------------------------------------------------------------------ helm

    def helm_upgrade(
        self, release: str, chart: str, *, repo: str | None, version: str, namespace: str, values: Path, wait_s: int
    ) -> Command:
        """`helm upgrade --install` of a pinned chart (an oci:// reference, or a name in ``repo``)."""
        return self.helm(
            "upgrade",
            "--install",
            release,
            chart,
            *(["--repo", repo] if repo else []),
            "--version",
            version,
            "-n",
            namespace,
            "--create-namespace",
            "-f",
            str(values),
            "--wait",
            f"--timeout={wait_s}s",
            timeout_s=wait_s + 60,
        )

    def helm_uninstall(self, release: str, *, namespace: str) -> Command:
        return self.helm("uninstall", release, "-n", namespace, "--wait")

    def helm_releases(self, namespace: str) -> dict[str, str]:
        """Release name -> status ("deployed", "failed", ...) in ``namespace``."""
        listed = self.run(self.helm("list", "-a", "-n", namespace, "-o", "json", mutates=False), check=False)
        if listed.returncode != 0:
            return {}
        return {release["name"]: release.get("status", "") for release in json.loads(listed.stdout or "[]")}

    # ------------------------------------------------------------------ kind and docker

    def kind_create(self, name: str, config: Path, *, node_image: str, wait_s: int) -> Command:
        # The node image's pull comes before the wait: allow it as long again.
        args = ("create", "cluster", "--name", name, "--config", str(config), "--image", node_image)
        return self.kind(*args, "--wait", f"{wait_s}s", timeout_s=2 * wait_s + 60)

    def kind_delete(self, name: str) -> Command:
        return self.kind("delete", "cluster", "--name", name)

    def kind_clusters(self) -> list[str]:
        return self.output(self.kind("get", "clusters", mutates=False)).split()

    def kind_load(self, image: str, cluster: str, *, nodes: Sequence[str] = (), timeout_s: int) -> Command:
        """`kind load docker-image`, into ``nodes`` only when given (`--nodes`: every node otherwise)."""
        where = ("--nodes", ",".join(nodes)) if nodes else ()
        return self.kind("load", "docker-image", image, "--name", cluster, *where, timeout_s=timeout_s)

    def docker_build(self, tag: str, context: Path, *, labels: Sequence[str] = (), timeout_s: int) -> Command:
        flags = [part for label in labels for part in ("--label", label)]
        return self.docker("build", "-t", tag, *flags, str(context), timeout_s=timeout_s)

    def docker_image_exists(self, tag: str) -> bool:
        return self.succeeds(self.docker("image", "inspect", tag, mutates=False))

    def docker_info(self) -> Command:
        return self.docker("info", "--format", "{{.ServerVersion}}", mutates=False, timeout_s=30)


VERSION_COMMANDS: dict[str, tuple[str, ...]] = {
    "docker": ("docker", "--version"),  # the client's own; `docker version` fails while the daemon is down
    "kind": ("kind", "version"),
    "kubectl": ("kubectl", "version", "--client", "-o", "json"),
    "helm": ("helm", "version", "--short"),
}


def tool_version(tool: str) -> tuple[int, ...] | None:
    """The installed version of ``tool``, parsed from its own `version` output; None when it does not answer."""
    command = Command(VERSION_COMMANDS[tool], timeout_s=30, mutates=False)
    try:
        text = Tools().output(command)
    except ToolError:
        return None
    if tool == "kubectl":
        try:
            text = json.loads(text)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            pass
    return parse_version(text)


def status_condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """An object's status condition of type ``kind`` (Ready, PodScheduled, ...), or None while it has none."""
    for item in obj.get("status", {}).get("conditions", []) or []:
        if item.get("type") == kind:
            return item
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    if pod.get("status", {}).get("phase") == "Succeeded":
        return True  # a finished job's pod is not a failure
    return (status_condition(pod, "Ready") or {}).get("status") == "True"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
