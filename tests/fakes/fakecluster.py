"""FAKE kind, kubectl, helm and docker for the unit tests: nothing here is Kubernetes.

`call(saved, tool, argv, stdin)` answers one call as the tool would (exit code, stdout, stderr). The
unit tests run it in their own process (`tests.fakes.FakeTools`' runner, state in memory); the
executables in `tests/fakes/bin/` run it through `main(tool, argv)`, state in files
(tests/fakes/fake_state.py). Each call is appended to the calls log ({"tool", "argv",
"stdin_objects", "ok"}); a small JSON state (kind clusters with their nodes, applied objects per
context by kind/namespace/name with their labels, Helm releases, built and loaded images) lets the
real code's done-checks work. `$FAKE_TOOLS_FAIL` is a regular expression: a call whose line
(`tool argv...`, plus ` <<Kind/name,...` for the objects on stdin) matches it fails with an error
message like the real tool's. A FAKE device plugin: installing the `nvidia-device-plugin` chart sets
`nvidia.com/gpu` capacity and allocatable on the nodes labelled `nvidia.com/gpu.present=true` (their
`nvidia.com/gpu.count` label); `docker info --format {{.DefaultRuntime}}` answers `$FAKE_DOCKER_RUNTIME`
(runc unless set). Workloads are "Ready" as soon as they are applied (unless their name
matches `$FAKE_TOOLS_UNREADY`: their pod stays Pending, with an event and log lines); `kind create
cluster` and `kubectl port-forward` start a tiny HTTP server answering `/health` on the host port
MLflow's NodePort is mapped to (or forwarded to), standing in for MLflow through kind's mapping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml

# FAKE API answers, one module each: Pods' admission and scheduling (fake_scheduling); InferenceServices' status,
# predictor pods, events and logs (fake_kserve); where the state is kept (fake_state). They sit beside this file:
# siblings in the tests.fakes package in-process, top-level modules in the executables (bin/ puts this folder first
# on sys.path). Never both in one process: fake_scheduling raises this module's `Fail`.
if __package__:
    from . import fake_kserve, fake_scheduling
    from .fake_state import FileState, MemoryState
else:
    import fake_kserve
    import fake_scheduling
    from fake_state import FileState, MemoryState

State = FileState | MemoryState

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "Node", "ClusterRole", "ClusterRoleBinding", "RuntimeClass"}
BUILTIN_NAMESPACES = {"default", "kube-system", "kube-public"}
MLFLOW_NODE_PORT = 30500
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
VERSIONS = {"kind": "kind v0.32.0 go1.24.2 linux/amd64", "helm": "v3.17.3+ge4da497", "docker": "27.3.1"}
KFP_CRDS = ["applications.app.k8s.io", "scheduledworkflows.kubeflow.org"]
HELM_CRDS = {"cert-manager": ["certificates.cert-manager.io"], "kserve-crd": ["inferenceservices.serving.kserve.io"]}
FAILURES = {
    "kind": 'ERROR: failed to create cluster: failed to init node with kubeadm: command "docker exec --privileged '
    'ml-sandbox-control-plane kubeadm init" failed with error: exit status 1 (too many open files)',
    "kubectl": 'Error from server (InternalError): error when creating "STDIN": Internal error occurred: failed '
    'calling webhook "webhook.cert-manager.io": dial tcp 10.96.12.7:443: connect: connection refused',
    "helm": "Error: INSTALLATION FAILED: context deadline exceeded",
    "docker": "ERROR: failed to solve: python:3.11-slim: failed to resolve source metadata: dial tcp: lookup "
    "registry-1.docker.io: no such host",
}
HEALTH_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


# --------------------------------------------------------------------------- state


def record(saved: State, tool: str, argv: list[str], objects: list[dict], ok: bool) -> None:
    saved.record({"tool": tool, "argv": argv, "stdin_objects": [ref(o) for o in objects], "ok": ok})


def ref(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def key(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind}/{'' if kind in CLUSTER_SCOPED else namespace or 'default'}/{name}"


class Fail(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- entry points


def main(tool: str, argv: list[str]) -> int:
    """The FAKE executable `tool`: state in the files its environment names, answers on stdout and stderr."""
    if tool == "kubectl" and argv[:1] == ["--context"] and argv[2:3] == ["port-forward"]:
        # Runs until it is stopped, as its own process (`Runner.start`): it serves /health here, so the
        # process keeps kubectl's command line.
        sys.argv = ["health", argv[-1].split(":")[0]]
        exec(HEALTH_SERVER, {"__name__": "health"})
    stdin = sys.stdin.read() if "-f" in argv and "-" in argv else ""
    code, out, err = call(FileState.from_env(), tool, argv, stdin)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


def call(saved: State, tool: str, argv: list[str], stdin: str | None) -> tuple[int, str, str]:
    """One call of the FAKE ``tool``: its exit code, stdout and stderr (what the executable prints)."""
    stdin_text = (stdin or "") if "-f" in argv and "-" in argv else ""  # only `-f -` reads its stdin
    objects = [doc for doc in yaml.safe_load_all(stdin_text) if doc] if stdin_text else []
    line = shlex.join([tool, *argv]) + (" <<" + ",".join(ref(o) for o in objects) if objects else "")
    pattern = os.environ.get("FAKE_TOOLS_FAIL")
    if pattern and re.search(pattern, line):
        record(saved, tool, argv, objects, ok=False)
        return 1, "", FAILURES[tool] + "\n"
    try:
        handler = {"kind": kind, "kubectl": kubectl, "helm": helm, "docker": docker}[tool]
        output = handler(saved, argv, objects)
    except Fail as failure:
        record(saved, tool, argv, objects, ok=False)
        return failure.code, "", f"{failure}\n"
    record(saved, tool, argv, objects, ok=True)
    return 0, f"{output}\n" if output else "", ""


def option(argv: list[str], *names: str, default: str | None = None) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


# --------------------------------------------------------------------------- kind


def kind(saved: State, argv: list[str], _objects: list[dict]) -> str:
    if argv[:1] == ["version"]:
        return VERSIONS["kind"]
    with saved.edit() as data:
        clusters = data["clusters"]
        if argv[:2] == ["get", "clusters"]:
            return "\n".join(sorted(clusters))
        name = option(argv, "--name", default="kind")
        if argv[:2] == ["create", "cluster"]:
            if name in clusters:
                raise Fail(
                    f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
                )
            config = yaml.safe_load(Path(option(argv, "--config")).read_text())
            nodes, workers = {}, 0
            for node in config["nodes"]:
                if node["role"] == "control-plane":
                    node_name = f"{name}-control-plane"
                    # kind keeps kubeadm's control-plane taint unless the cluster has one node only
                    # (kind pkg/cluster/internal/create/actions/kubeadminit/init.go).
                    taints = [] if len(config["nodes"]) == 1 else [CONTROL_PLANE_TAINT]
                else:
                    workers += 1
                    node_name = f"{name}-worker{workers if workers > 1 else ''}"
                    taints = [
                        taint
                        for patch in node.get("kubeadmConfigPatches", [])
                        for taint in yaml.safe_load(patch).get("nodeRegistration", {}).get("taints", [])
                    ]
                nodes[node_name] = {
                    "metadata": {"name": node_name, "labels": node.get("labels", {})},
                    "spec": {"taints": taints} if taints else {},
                    "status": {},
                    "images": [],
                }
            clusters[name] = {"nodes": nodes, "images": [], "image": option(argv, "--image")}
            mapped = [
                m["hostPort"]
                for n in config["nodes"]
                for m in n.get("extraPortMappings", [])
                if m["containerPort"] == MLFLOW_NODE_PORT
            ]
            if mapped:
                clusters[name]["health_pid"] = serve_health(mapped[0])
            return f'Creating cluster "{name}" ...\n ✓ Ensuring node image\nSet kubectl context to "kind-{name}"'
        if argv[:2] == ["delete", "cluster"]:
            cluster = clusters.pop(name, None)
            data["objects"].pop(f"kind-{name}", None)
            data["helm"].pop(f"kind-{name}", None)
            if cluster and cluster.get("health_pid"):
                stop(cluster["health_pid"])
            return f'Deleting cluster "{name}" ...'
        if argv[:2] == ["load", "docker-image"]:
            image = argv[2]
            if image not in data["built"]:
                raise Fail(f'ERROR: image: "{image}" not present locally')
            if name not in clusters:
                raise Fail(f'ERROR: no nodes found for cluster "{name}"')
            wanted = (
                (option(argv, "--nodes") or "").split(",") if option(argv, "--nodes") else list(clusters[name]["nodes"])
            )
            unknown = [node for node in wanted if node not in clusters[name]["nodes"]]
            if unknown:
                raise Fail(f"ERROR: unknown node: {unknown[0]}")
            for node in wanted:
                clusters[name]["nodes"][node].setdefault("images", []).append(image)
            return "\n".join(
                f'Image: "{image}" with ID "sha256:0f3e" not yet present on node "{n}", loading...' for n in wanted
            )
    raise Fail(f'ERROR: unknown command {argv!r} for "kind"')


def serve_health(port: int) -> int:
    # Its own session and no inherited pipes: the caller's captured output must reach EOF.
    process = subprocess.Popen(
        [sys.executable, "-c", HEALTH_SERVER, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process.pid


def stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    with contextlib.suppress(ChildProcessError):  # in-process the server is this process's child: reap it
        os.waitpid(pid, 0)


# --------------------------------------------------------------------------- kubectl


def kubectl(saved: State, argv: list[str], objects: list[dict]) -> str:
    if "version" in argv[:1]:
        return json.dumps({"clientVersion": {"gitVersion": "v1.36.1", "major": "1", "minor": "36"}})
    context = option(argv, "--context")
    if context is None:
        raise Fail("FAKE kubectl: called without --context (the sandbox must always name it)", 2)
    args = argv[2:] if argv[:1] == ["--context"] else argv
    if args[:1] in (["-n"], ["--namespace"]):  # `kubectl -n NS exec ...`
        args = [args[2], *args[:2], *args[3:]]
    if args[:1] == ["port-forward"]:  # `main` serves it, in its own process: never run to completion
        raise Fail("FAKE kubectl: a port-forward runs until it is stopped: start it (Runner.start), do not run it")
    with saved.edit() as data:
        if context.startswith("kind-"):
            if context[len("kind-") :] not in data["clusters"]:
                raise Fail(f'error: context "{context}" does not exist')
        elif context not in data["contexts"]:
            raise Fail(f'error: context "{context}" does not exist')
        store = data["objects"].setdefault(context, {})
        nodes = data["clusters"].get(context[len("kind-") :], {}).get("nodes", {})
        namespace = option(args, "-n", "--namespace")
        verb = args[0]
        # --- FAKE Pod answers scripted by the test (tests/fakes/fake_scheduling.py); None: not a Pod call
        answer = fake_scheduling.kubectl(data, store, nodes, args, objects, namespace)
        if answer is not None:
            return answer
        # ---
        if verb == "config":
            return context
        if verb == "version":  # the server answers: the context's cluster exists
            return json.dumps({"serverVersion": {"gitVersion": "v1.36.1", "major": "1", "minor": "36"}})
        if verb == "apply":
            return apply(store, args, objects, namespace)
        if verb == "get":
            return get(store, nodes, args, namespace)
        if verb == "delete":
            return delete(store, args, namespace)
        if verb == "patch":
            node = nodes.get(args[2])
            if node is None:
                raise Fail(f'Error from server (NotFound): nodes "{args[2]}" not found')
            for op in json.loads(option(args, "-p")):
                section, resource = op["path"].split("/")[2], op["path"].split("/")[3].replace("~1", "/")
                node["status"].setdefault(section, {})[resource] = op["value"]
            return f"node/{args[2]} patched"
        if verb == "wait" and args[1].startswith("node/"):
            return wait_node(nodes, args)
        if verb in ("wait", "rollout"):
            return wait(store, args, namespace)
        if verb == "exec":
            target = args[3] if args[1] in ("-n", "--namespace") else args[1]
            name = target.split("/", 1)[1]
            if store.get(key("Deployment", namespace, name)) is None:
                raise Fail(f'Error from server (NotFound): deployments.apps "{name}" not found')
            return "kubeflow-admin's keys replaced"
        if verb == "logs":
            # --- the pipeline runner's tests: $FAKE_POD_LOGS is a JSON file {pod name: its log}
            logs_file = os.environ.get("FAKE_POD_LOGS")
            pod_logs = json.loads(Path(logs_file).read_text()) if logs_file else {}
            if args[1] in pod_logs:
                return pod_logs[args[1]]
            # ---
            return fake_kserve.logs(store, args) or "FAKE log line 1\nFAKE log line 2: Back-off pulling image"
    raise Fail(f'error: unknown command "{args[0]}" for "kubectl"')


def labelled(obj: dict, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels", {})
    return all(labels.get(k) == v for k, v in (part.split("=", 1) for part in selector.split(",")))


def apply(store: dict, args: list[str], objects: list[dict], namespace: str | None) -> str:
    dry_run = "--dry-run=server" in args
    if "-k" in args:
        url = option(args, "-k")
        made = kustomize(url)
        objects = made
    out = []
    for obj in objects:
        ns = obj["metadata"].get("namespace", namespace)
        if obj["kind"] not in CLUSTER_SCOPED and ns not in BUILTIN_NAMESPACES:
            pending = [o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == ns]
            if key("Namespace", None, ns) not in store and not (pending and not dry_run):
                raise Fail(f'Error from server (NotFound): error when creating "STDIN": namespaces "{ns}" not found')
        if dry_run:
            out.append(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied (server dry run)")
            continue
        obj = json.loads(json.dumps(obj))
        obj["metadata"].setdefault("namespace", ns) if obj["kind"] not in CLUSTER_SCOPED else None
        if obj["kind"] in ("Deployment", "StatefulSet"):
            replicas = obj.get("spec", {}).get("replicas", 1)
            obj["status"] = {"replicas": replicas, "readyReplicas": replicas}
            pod_labels = obj["spec"]["template"]["metadata"].get("labels", {})
            add_pod(store, f"{obj['metadata']['name']}-0", ns, pod_labels, "Running")
        if obj["kind"] == "Job":
            obj["status"] = {"succeeded": 1}
            add_pod(
                store,
                f"{obj['metadata']['name']}-x",
                ns,
                obj["spec"]["template"]["metadata"].get("labels", {}),
                "Succeeded",
            )
        store[key(obj["kind"], ns, obj["metadata"]["name"])] = obj
        if obj["kind"] == "Namespace":  # FAKE serviceaccounts controller: every namespace gets `default`
            account = {"kind": "ServiceAccount", "metadata": {"name": "default", "namespace": obj["metadata"]["name"]}}
            store.setdefault(key("ServiceAccount", obj["metadata"]["name"], "default"), account)
        fake_kserve.applied(store, obj)  # FAKE KServe hook
        out.append(f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied")
    return "\n".join(out)


def add_pod(store: dict, name: str, namespace: str, labels: dict, phase: str) -> None:
    if phase == "Running" and re.fullmatch(os.environ.get("FAKE_TOOLS_UNREADY", "^$"), name.rsplit("-", 1)[0]):
        phase = "Pending"  # told to leave this workload's pod not Ready (ImagePullBackOff, say)
    conditions = [{"type": "Ready", "status": "True" if phase == "Running" else "False"}]
    if phase == "Pending":
        conditions[0]["reason"] = "ContainersNotReady"
    pod = {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "status": {"phase": phase, "conditions": conditions},
    }
    store[key("Pod", namespace, name)] = pod


def kustomize(url: str) -> list[dict]:
    """What KFP's kustomizations make, in short: its CRDs, or its namespace's deployments."""
    if "cluster-scoped-resources" in url:
        made = [{"kind": "Namespace", "metadata": {"name": "kubeflow", "labels": {"app": "kfp"}}}]
        return made + [{"kind": "CustomResourceDefinition", "metadata": {"name": n, "labels": {}}} for n in KFP_CRDS]
    deployments = ("ml-pipeline", "seaweedfs", "ml-pipeline-ui")
    return [
        {
            "kind": "Deployment",
            "metadata": {"name": d, "namespace": "kubeflow", "labels": {"app": d}},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": d}}}},
        }
        for d in deployments
    ]


PLURALS = {
    "pods": "Pod",
    "pod": "Pod",
    "nodes": "Node",
    "crd": "CustomResourceDefinition",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "jobs": "Job",
    "services": "Service",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "resourcequotas": "ResourceQuota",
    "limitranges": "LimitRange",
    "namespace": "Namespace",
    "serviceaccount": "ServiceAccount",
    "customresourcedefinition": "CustomResourceDefinition",
    "runtimeclass": "RuntimeClass",
    **fake_kserve.PLURALS,  # FAKE KServe hook
}


def kind_of(word: str, store: dict) -> str:
    if word in PLURALS:
        return PLURALS[word]
    for stored in store.values():
        if stored["kind"].lower() == word:
            return stored["kind"]
    return word.capitalize()


def get(store: dict, nodes: dict, args: list[str], namespace: str | None) -> str:
    selector = option(args, "-l")
    words = [a for a in args[1:] if not a.startswith("-")]
    words = [w for w in words if w not in (namespace, selector, "json")]
    ignore = "--ignore-not-found" in args
    if words[0] == "events":
        default = "LAST SEEN  TYPE     REASON  MESSAGE\n10s        Warning  Failed  FAKE event: ErrImagePull"
        return fake_kserve.events(store, args) or default  # FAKE KServe hook
    if words[0] == "nodes":
        items = [n for n in nodes.values() if not selector or selector in n["metadata"]["labels"]]
        return json.dumps({"kind": "List", "items": items})
    refs = [w.split("/", 1) for w in words] if "/" in words[0] else None
    if refs is None and len(words) == 2:
        refs = [[words[0], words[1]]]
    if refs is None:  # a kind, maybe by label
        wanted = kind_of(words[0], store)
        items = [
            o
            for o in store.values()
            if o["kind"] == wanted
            and labelled(o, selector)
            and (wanted in CLUSTER_SCOPED or o["metadata"].get("namespace") == (namespace or "default"))
        ]
        return json.dumps({"kind": "List", "items": items})
    found = []
    for word, name in refs:
        obj = store.get(key(kind_of(word, store), namespace, name))
        if obj is None and not ignore:
            raise Fail(f'Error from server (NotFound): {word}s "{name}" not found')
        if obj is not None:
            found.append(obj)
    if not found:
        return ""
    return json.dumps(found[0] if len(refs) == 1 else {"kind": "List", "items": found})


def delete(store: dict, args: list[str], namespace: str | None) -> str:
    selector = option(args, "-l")
    if "-k" in args:
        made = kustomize(option(args, "-k"))
        for obj in made:
            store.pop(key(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]), None)
        return "deleted (kustomize)"
    words = [a for a in args[1:] if not a.startswith("-") and a not in (namespace, selector)]
    gone = []
    if words[0] == "namespace":
        for name in words[1:]:
            for k in [
                k
                for k, o in store.items()
                if k == key("Namespace", None, name) or o["metadata"].get("namespace") == name
            ]:
                gone.append(store.pop(k))
    elif "/" in words[0]:
        for word in words:
            kind_word, name = word.split("/", 1)
            obj = store.pop(key(kind_of(kind_word, store), namespace, name), None)
            if obj is not None:
                gone.append(obj)
                remove_pods(store, obj)
    else:
        kinds = {kind_of(w, store) for w in words[0].split(",")}
        for k, obj in list(store.items()):
            if obj["kind"] in kinds and obj["metadata"].get("namespace") == namespace and labelled(obj, selector):
                gone.append(store.pop(k))
                remove_pods(store, obj)
    return "\n".join(f'{o["kind"].lower()} "{o["metadata"]["name"]}" deleted' for o in gone)


def remove_pods(store: dict, owner: dict) -> None:
    fake_kserve.deleted(store, owner)  # FAKE KServe hook
    for k, obj in list(store.items()):
        if obj["kind"] == "Pod" and obj["metadata"]["name"].rsplit("-", 1)[0] == owner["metadata"]["name"]:
            store.pop(k)


def wait(store: dict, args: list[str], namespace: str | None) -> str:
    if args[:2] == ["rollout", "restart"]:
        return "restarted"
    target = args[2] if args[0] == "rollout" else args[1]
    if target == "pods":
        return "condition met"
    kind_word, name = target.split("/", 1)
    if store.get(key(kind_of(kind_word, store), namespace, name)) is None:
        raise Fail(f'Error from server (NotFound): {kind_word}s "{name}" not found')
    if timed_out := fake_kserve.waited(store.get(key(kind_of(kind_word, store), namespace, name)), target):
        raise Fail(timed_out)  # FAKE KServe hook
    return f"{target} condition met"


def wait_node(nodes: dict, args: list[str]) -> str:
    """`kubectl wait node/N --for=jsonpath={.status.allocatable.nvidia\\.com/gpu}=COUNT`, and nothing else."""
    name = args[1].split("/", 1)[1]
    if name not in nodes:
        raise Fail(f'Error from server (NotFound): nodes "{name}" not found')
    match = re.fullmatch(r"--for=jsonpath=\{\.status\.(\w+)\.nvidia\\\.com/gpu\}=(\d+)", args[2])
    if match is None:
        raise Fail(f"FAKE kubectl: wait condition {args[2]!r} is not one the fake knows")
    if nodes[name]["status"].get(match.group(1), {}).get("nvidia.com/gpu") != match.group(2):
        raise Fail(f"error: timed out waiting for the condition on nodes/{name}")
    return f"node/{name} condition met"


GPU_PRESENT = "nvidia.com/gpu.present"


def fake_device_plugin(nodes: dict, *, installed: bool) -> None:
    """What NVIDIA's device plugin does, in FAKE: the GPU nodes' capacity appears (or goes)."""
    for node in nodes.values():
        labels = node["metadata"]["labels"]
        if labels.get(GPU_PRESENT) != "true":
            continue
        for section in ("capacity", "allocatable"):
            resources = node["status"].setdefault(section, {})
            if installed:
                resources["nvidia.com/gpu"] = labels["nvidia.com/gpu.count"]
            else:
                resources.pop("nvidia.com/gpu", None)


# --------------------------------------------------------------------------- helm


def helm(saved: State, argv: list[str], _objects: list[dict]) -> str:
    if argv[:1] == ["version"]:
        return VERSIONS["helm"]
    context = option(argv, "--kube-context")
    if context is None:
        raise Fail("FAKE helm: called without --kube-context (the sandbox must always name it)", 2)
    args = argv[2:]
    namespace = option(args, "-n", default="default")
    with saved.edit() as data:
        releases = data["helm"].setdefault(context, {})
        store = data["objects"].setdefault(context, {})
        nodes = data["clusters"].get(context[len("kind-") :], {}).get("nodes", {})
        if args[:1] == ["list"]:
            return json.dumps(
                [
                    {"name": n.split("/", 1)[1], "status": r["status"]}
                    for n, r in releases.items()
                    if n.startswith(namespace + "/")
                ]
            )
        if args[:2] == ["upgrade", "--install"]:
            name = args[2]
            releases[f"{namespace}/{name}"] = {
                "chart": args[3],
                "version": option(args, "--version"),
                "status": "deployed",
                "values": option(args, "-f"),
            }
            if name == "nvidia-device-plugin":
                fake_device_plugin(nodes, installed=True)
            for crd in HELM_CRDS.get(name, []):
                store[key("CustomResourceDefinition", None, crd)] = {
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": crd},
                    "release": name,
                }
            return f'Release "{name}" has been upgraded. Happy Helming!'
        if args[:1] == ["uninstall"]:
            name = args[1]
            if releases.pop(f"{namespace}/{name}", None) is None:
                raise Fail(f"Error: uninstall: Release not loaded: {name}: release: not found")
            if name == "nvidia-device-plugin":
                fake_device_plugin(nodes, installed=False)
            for k in [k for k, o in store.items() if o.get("release") == name]:
                store.pop(k)
            return f'release "{name}" uninstalled'
    raise Fail(f'Error: unknown command "{args[0]}" for "helm"')


# --------------------------------------------------------------------------- docker


def docker(saved: State, argv: list[str], _objects: list[dict]) -> str:
    if argv[:1] == ["--version"]:
        return f"Docker version {VERSIONS['docker']}, build fake"
    if argv[:1] == ["info"]:
        if "{{.DefaultRuntime}}" in argv:
            return os.environ.get("FAKE_DOCKER_RUNTIME", "runc")
        return f"{VERSIONS['docker']} 2"
    with saved.edit() as data:
        if argv[:1] == ["build"]:
            data["built"].append(option(argv, "-t"))
            return "Successfully built 0f3e"
        if argv[:2] == ["image", "inspect"]:
            if argv[2] not in data["built"]:
                raise Fail(f"Error: No such image: {argv[2]}")
            return "[{}]"
        if argv[:1] == ["exec"] and argv[2:4] == ["bash", "-c"]:  # nvkind's scripts in a GPU node
            if not any(argv[1] in cluster["nodes"] for cluster in data["clusters"].values()):
                raise Fail(f"Error response from daemon: No such container: {argv[1]}")
            node = next(c["nodes"][argv[1]] for c in data["clusters"].values() if argv[1] in c["nodes"])
            node.setdefault("scripts", []).append(argv[4].splitlines()[1] if "\n" in argv[4] else argv[4])
            return "FAKE: script ran"
        if argv[:1] == ["exec"]:  # crictl inspecti IMAGE in a kind node
            node = next((c["nodes"][argv[1]] for c in data["clusters"].values() if argv[1] in c["nodes"]), None)
            if node is None:
                raise Fail(f"Error response from daemon: No such container: {argv[1]}")
            if argv[-1] not in node.get("images", []):
                raise Fail(f'FATA[0000] no such image "{argv[-1]}" present')
            return "{}"
    raise Fail(f"docker: '{argv[0]}' is not a docker command.")
