"""The ordered, idempotent bring-up both Kubernetes profiles share, as `sandbox.actions.Action`s, made from the
one bundle (`manifests.bundle`) and the profile's source of the cluster (`kube/source.py`).

[the source's first actions: kind's cluster and its fake GPUs, or a given cluster's operator CRDs present] →
[the bundle's `nodes` parts: real GPUs, nvkind's way, on the node carrying this machine's GPUs: the NVIDIA toolkit
in it, the `nvidia` RuntimeClass, NVIDIA's device plugin] → the project's image (built and loaded, or pulled:
before any pod names it) → the bundle's `stack` parts, one action each (namespace with quota and limit range,
secrets, PostgreSQL, the S3 store and its buckets, MLflow, JupyterLab) → [its `operators` parts, where the
source installs them: cert-manager, KServe's three charts, Kubeflow Pipelines with its object-store keys
replaced] → readiness (every pod Ready, MLflow's /health from the host).

Each action's `done` reads the cluster (a second `up` changes nothing), its `undo` removes exactly
what its `run` made, and its `commands` are the exact command lines `--dry-run` prints. Each also states
its `Effects` (what it applies, builds, creates and waits for), which `invariants.check_plan` checks offline
on every plan: images exist before pods use them, waits follow what they wait for, nothing upstream is
labelled as the sandbox's, explicit resources, every timeout a setting.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sandbox.errors import PreflightError, ServiceStartError
from sandbox.files import write_private
from sandbox.profiles.kube import image as project_image_rules
from sandbox.profiles.kube import upstream, versions
from sandbox.profiles.kube.manifests import operators
from sandbox.profiles.kube.manifests.bundle import Bundle, Part
from sandbox.profiles.kube.manifests.gpu import gpu_tolerations
from sandbox.profiles.kube.manifests.namespace import quota_namespaces
from sandbox.profiles.kube.manifests.operators import HelmRelease
from sandbox.profiles.kube.manifests.spec import containers
from sandbox.profiles.kube.node_actions import real_gpus
from sandbox.profiles.kube.plan import Effects, KubeAction, Ref, Site, ref_of
from sandbox.profiles.kube.source import Source
from sandbox.profiles.kube.state import KubeState
from sandbox.profiles.kube.tools import Command, Tools, pod_ready

__all__ = ["Effects", "KubeAction", "Ref", "Site", "bring_up", "namespaces", "ref_of"]

WORKLOADS = ("Deployment", "StatefulSet")
HEALTH_TRIES = 30  # seconds MLflow's /health may take to answer through the host port once its pod Ready
# CRDs that must exist when the operators are not installed by the sandbox (cluster profile).
OPERATOR_CRDS = {
    "inferenceservices.serving.kserve.io": "KServe",
    "certificates.cert-manager.io": "cert-manager",
    "scheduledworkflows.kubeflow.org": "Kubeflow Pipelines",
}


def bring_up(site: Site, bundle: Bundle, source: Source, state: KubeState) -> list[KubeAction]:
    """The plan: every part of ``bundle`` as an action, in its order, around the source's own actions."""
    actions = source.prepare(site, bundle, state)
    actions += [real_gpus(site, part) for part in bundle.stage("nodes")]
    # Before any object that names it: a pod whose image is missing pulls it from docker.io and never starts.
    actions.append(source.image_action(site, state))
    actions += [component(site, part, dry_run_first=source.dry_run_first) for part in bundle.stage("stack")]
    if source.installs_operators:
        for part in bundle.stage("operators"):
            actions.append(
                helm_release(site, part.release)
                if part.release is not None
                else kubeflow_pipelines(site, part, dry_run_first=source.dry_run_first)
            )
    actions.append(readiness(site))
    return actions


def namespaces(site: Site, bundle: Bundle, source: Source) -> list[str]:
    """Every namespace the plan puts something in: what a failure's report and `sandbox diagnose` cover."""
    names = [site.namespace, *quota_namespaces(site.spec)]
    if source.installs_operators:
        names += [release.chart.namespace for part in bundle.stage("operators") if (release := part.release)]
        names.append(versions.KFP_NAMESPACE)
    names += [release.chart.namespace for part in bundle.stage("nodes") if (release := part.release)]
    return [name for index, name in enumerate(names) if name != "default" and name not in names[:index]]


def operator_crds(site: Site) -> KubeAction:
    """The cluster profile without `install_operators`: the operators must be there already."""
    tools = site.tools

    def absent() -> list[str]:
        return [crd for crd in OPERATOR_CRDS if tools.get_json("crd", crd) is None]

    def done() -> str | None:
        return None if absent() else f"{len(OPERATOR_CRDS)} CRDs present"

    def run() -> str:
        missing = absent()
        raise PreflightError(
            "the cluster lacks the operators' CRDs: " + ", ".join(f"{crd} ({OPERATOR_CRDS[crd]})" for crd in missing),
            hint="install them (see docs/kind.md), or let the sandbox install them: "
            "`cluster.install_operators: true` in sandbox.yaml",
        )

    commands = tuple(tools.get("crd", crd).line for crd in OPERATOR_CRDS)
    # The operators' objects are there (or `run` refuses): the later actions may rely on them.
    there = tuple(("crd", "", crd) for crd in OPERATOR_CRDS)
    return KubeAction(
        "Operators' CRDs present (cert-manager, KServe, KFP)",
        run,
        None,
        done,
        commands,
        effects=Effects(creates=there, upstream=there),
    )


# --------------------------------------------------------------------------- the stack's own objects


def _ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}/{obj['metadata']['name']}"


def _by_namespace(objects: list[dict[str, Any]], default: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        grouped.setdefault(obj["metadata"].get("namespace", default), []).append(obj)
    return grouped


def component(site: Site, part: Part, *, dry_run_first: bool = False) -> KubeAction:
    """A part of the stack: its objects applied (namespaces first), then its workloads and Jobs waited for.
    ``dry_run_first``: a server-side dry-run before each apply (a cluster the sandbox did not create)."""
    tools, namespace, objects = site.tools, site.namespace, list(part.objects)
    scoped = [o for o in objects if o["kind"] == "Namespace"]  # applied first: the rest lives in it
    namespaced = [o for o in objects if o["kind"] != "Namespace"]

    def applies(new_namespaces: list[dict[str, Any]]) -> list[Command]:
        commands: list[Command] = []
        for group in (new_namespaces, namespaced):
            if group and dry_run_first:
                commands.append(tools.apply(group, dry_run=True))  # the API server judges it before anything is stored
            if group:
                commands.append(tools.apply(group))
        return commands

    waits = [
        tools.rollout_status(_ref(o), namespace=o["metadata"]["namespace"], timeout_s=site.timeouts.rollout)
        for o in namespaced
        if o["kind"] in WORKLOADS
    ]
    waits += [
        tools.wait(_ref(o), "condition=Complete", namespace=o["metadata"]["namespace"], timeout_s=site.timeouts.job)
        for o in namespaced
        if o["kind"] == "Job"
    ]

    def done() -> str | None:
        found = _existing(tools, namespace, objects)
        if len(found) < len(objects):
            return None
        if any(not _workload_ready(o) for o in found if o.get("kind") in WORKLOADS):
            return None
        # A workload whose pods name another image (the project's, after a code change) is applied again: it rolls.
        wanted = {ref_of(o): _images(o) for o in namespaced if o["kind"] in (*WORKLOADS, "Job")}
        if any(ref_of(o) in wanted and _images(o) != wanted[ref_of(o)] for o in found):
            return None
        return f"{len(objects)} objects present"

    created: list[dict[str, Any]] = []  # namespaces this run made: the only ones its undo may delete

    def run() -> str:
        # A namespace that exists already (someone else's, on a cluster) is used as it is, never relabelled.
        there = {o["metadata"]["name"] for o in _existing(tools, namespace, scoped)} if scoped else set()
        created[:] = [o for o in scoped if o["metadata"]["name"] not in there]
        for command in applies(created) + waits:
            tools.run(command)
        shown = [_ref(o) for o in objects if o["kind"] in (*WORKLOADS, "Namespace", "Job")]
        return ", ".join(shown) or f"{len(objects)} objects"

    def undo() -> None:
        for ns, members in _by_namespace(namespaced, namespace).items():
            tools.run(tools.kubectl("delete", *map(_ref, members), "-n", ns, "--ignore-not-found"))
        for obj in created:
            tools.run(tools.delete_namespace(obj["metadata"]["name"]))

    images = sorted({c["image"] for o in namespaced for c in containers(o)})
    title = part.title + (f" (image{'s' if len(images) > 1 else ''} {', '.join(images)})" if images else "")
    commands = tuple(c.line for c in applies(scoped) + waits)
    waited = tuple(ref_of(o) for o in namespaced if o["kind"] in (*WORKLOADS, "Job"))
    return KubeAction(
        title, run, undo, done, commands, undo_on_failure=True, effects=Effects(applies=tuple(objects), waits=waited)
    )


def _images(obj: dict[str, Any]) -> list[str]:
    return [container.get("image", "") for container in containers(obj)]


def _existing(tools: Tools, namespace: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Those of ``objects`` the API server has (one `get` per namespace)."""
    found: list[dict[str, Any]] = []
    for ns, members in _by_namespace(objects, namespace).items():
        get = tools.kubectl("get", *map(_ref, members), "-n", ns, "--ignore-not-found", "-o", "json", mutates=False)
        result = tools.run(get, check=False)
        if result.returncode != 0 or not result.stdout.strip():
            continue
        parsed = json.loads(result.stdout)
        found += parsed["items"] if "items" in parsed else [parsed]
    return found


def _workload_ready(obj: dict[str, Any]) -> bool:
    wanted = obj.get("spec", {}).get("replicas", 1)
    return obj.get("status", {}).get("readyReplicas", 0) >= wanted


# --------------------------------------------------------------------------- operators


def helm_release(site: Site, release: HelmRelease) -> KubeAction:
    tools, chart = site.tools, release.chart
    values = site.workdir / "values" / f"{release.name}.yaml"
    install = tools.helm_upgrade(
        release.name,
        chart.ref,
        repo=None if chart.oci else chart.repo,
        version=chart.version,
        namespace=chart.namespace,
        values=values,
        wait_s=site.timeouts.helm,
    )

    def done() -> str | None:
        status = tools.helm_releases(chart.namespace).get(release.name)
        return "deployed" if status == "deployed" else None

    def undo() -> None:
        if release.name in tools.helm_releases(chart.namespace):
            tools.run(tools.helm_uninstall(release.name, namespace=chart.namespace))

    def run() -> str:
        values.parent.mkdir(parents=True, exist_ok=True)
        write_private(values, yaml.safe_dump(release.values, sort_keys=False))
        tools.run(install)
        return f"{chart.ref} {chart.version} in {chart.namespace}"

    made = upstream.helm_creates(chart)
    return KubeAction(
        f"Helm: {release.name} {chart.version}",
        run,
        undo,
        done,
        (install.line,),
        undo_on_failure=True,  # a release that failed its --wait is left "failed": uninstall it
        effects=Effects(creates=made, upstream=made, waits=tuple(ref for ref in made if ref[0] == "deployment")),
    )


def kubeflow_pipelines(site: Site, part: Part, *, dry_run_first: bool = False) -> KubeAction:
    """KFP standalone: cluster-scoped resources, its CRD Established, the env, then its keys replaced.

    The object-store Secret is KFP's own (upstream): the sandbox changes its keys but never labels it as its
    own, so `down` leaves it. The done-check compares its keys with this sandbox's, so an `up` after a `down
    --keep-cluster --purge` (new keys) rotates them again instead of finding KFP "done" with keys it lacks.
    """
    tools, timeouts = site.tools, site.timeouts
    scoped_url, env_url = versions.KFP_KUSTOMIZE
    kfp_objects = list(part.objects)
    kfp = versions.KFP_NAMESPACE
    steps: list[Command] = [
        tools.apply_kustomize(scoped_url, timeout_s=timeouts.kfp_apply),
        tools.wait(f"crd/{versions.KFP_WAIT_CRD}", "condition=Established", timeout_s=timeouts.crd),
        tools.apply_kustomize(env_url, timeout_s=timeouts.kfp_apply),
        *([tools.apply(kfp_objects, dry_run=True)] if dry_run_first else []),
        tools.apply(kfp_objects),
        # The object store, the API server and the UI read the keys when they start: restart them on the new ones,
        tools.kubectl("rollout", "restart", *(f"deployment/{d}" for d in operators.KFP_RESTART), "-n", kfp),
        *(
            tools.rollout_status(f"deployment/{d}", namespace=kfp, timeout_s=timeouts.kfp_pods)
            for d in operators.KFP_RESTART
        ),
        # then drop the stock identity from SeaweedFS and make it again with the generated keys only.
        tools.kubectl(*operators.kfp_rotate_keys_command(kfp)[1:], timeout_s=timeouts.rollout),
        tools.wait("pods", "condition=Ready", namespace=kfp, timeout_s=timeouts.kfp_pods),
    ]

    def keys_current() -> bool:
        secret = tools.get_json("secret", operators.KFP_SECRET, namespace=kfp)
        keys = secret_values(secret or {})
        wanted = site.spec.secrets
        return keys.get("accesskey") == wanted.kfp_s3_access_key and keys.get("secretkey") == wanted.kfp_s3_secret_key

    def done() -> str | None:
        present = _existing(tools, versions.KFP_NAMESPACE, kfp_objects)
        if len(present) < len(kfp_objects) or tools.get_json("deployment", "ml-pipeline", namespace=kfp) is None:
            return None
        if not keys_current():
            return None
        return f"KFP {versions.KFP_VERSION} with the sandbox's object-store keys"

    def run() -> str:
        for step in steps:
            tools.run(step)
        return f"KFP {versions.KFP_VERSION} in {versions.KFP_NAMESPACE}; stock object-store keys replaced"

    def undo() -> None:
        tools.run(tools.kubectl("delete", "-k", env_url, "--ignore-not-found", timeout_s=timeouts.kfp_apply))
        tools.run(tools.kubectl("delete", "-k", scoped_url, "--ignore-not-found", timeout_s=timeouts.kfp_apply))

    made = (*upstream.KFP_CLUSTER_SCOPED, *upstream.KFP_ENV)
    return KubeAction(
        part.title,
        run,
        undo,
        done,
        tuple(s.line for s in steps),
        undo_on_failure=True,
        effects=Effects(
            applies=tuple(kfp_objects),
            creates=made,
            upstream=made,
            waits=(
                ("crd", "", versions.KFP_WAIT_CRD),
                *(("deployment", kfp, d) for d in operators.KFP_RESTART),
                ("pod", kfp, "*"),
            ),
        ),
    )


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's values as text: the API returns `data` base64-encoded (`stringData` is write-only)."""
    values = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    return {**values, **(secret.get("stringData") or {})}


# --------------------------------------------------------------------------- the project image and readiness


def built_image(site: Site, *, cluster: str, build_context: Path) -> KubeAction:
    """kind: the project's image, built (labelled with its context's digest, which its tag carries) and loaded into
    the nodes its pods can be scheduled on (not the tainted control plane of a multi-node cluster). Done when
    every such node holds the tag: a changed build context is a new tag, so it is built and loaded again."""
    tools, image, timeouts = site.tools, site.spec.image, site.timeouts
    context = build_context
    labels = ()
    if (context / "Dockerfile").is_file():
        labels = (f"{project_image_rules.DIGEST_LABEL}={project_image_rules.context_digest(context)}",)
    build = tools.docker_build(image, context, labels=labels, timeout_s=timeouts.image_build)

    def load(nodes: list[str]) -> Command:
        return tools.kind_load(image, cluster, nodes=nodes, timeout_s=timeouts.image_load)

    def inspect(node: str) -> Command:
        return tools.docker("exec", node, "crictl", "inspecti", image, mutates=False, timeout_s=60)

    def nodes() -> list[str]:
        listed = (tools.get_json("nodes") or {}).get("items", [])
        # Where a pod of the stack, a predictor with GPUs included, may run.
        return project_image_rules.nodes_for(listed, gpu_tolerations(site.spec))

    def done() -> str | None:
        wanted = nodes()
        if wanted and all(tools.succeeds(inspect(node)) for node in wanted):
            return f"already in {', '.join(wanted)}"
        return None

    def run() -> str:
        if not (context / "Dockerfile").is_file():
            raise PreflightError(
                f"no Dockerfile in {context}: the project's image cannot be built",
                hint="run `sandbox up` from a checkout of the repository (it holds the Dockerfile)",
            )
        wanted = nodes()
        tools.run(build)
        tools.run(load(wanted))
        return f"built and loaded into {', '.join(wanted)}"

    # No undo: the image in the host's Docker is a cache; the copies in the nodes go with the cluster.
    return KubeAction(
        f"Project image {image}",
        run,
        None,
        done,
        (build.line, load(["<the nodes its pods can be scheduled on>"]).line),
        effects=Effects(images=(image,), waits=(("node", "", "*"),)),
    )


def pulled_image(site: Site) -> KubeAction:
    """A given cluster: its nodes pull the project's image from where `cluster.image` names it."""
    image = site.spec.image
    note = f"not built: the cluster pulls {image} (push it to your registry; `cluster.image` names it)"
    return KubeAction(f"Project image {image}", lambda: note, None, lambda: note, effects=Effects(images=(image,)))


def readiness(site: Site) -> KubeAction:
    """Every pod of the stack Ready, then MLflow's /health answered through the host's port."""
    tools, namespace = site.tools, site.namespace
    wait = tools.wait(
        "pods", "condition=Ready", namespace=namespace, selector=site.selector, timeout_s=site.timeouts.rollout
    )

    def health() -> str | None:
        url = site.health_url()
        if not url:
            return "no host endpoint to probe"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return f"MLflow {url} answered {response.status}" if response.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    def done() -> str | None:
        pods = (tools.get_json("pods", namespace=namespace, selector=site.selector) or {}).get("items", [])
        if not pods or not all(pod_ready(pod) for pod in pods):
            return None
        return health()

    def run() -> str:
        tools.run(wait)
        note = None
        for _ in range(HEALTH_TRIES):  # a fresh port-forward or mapping needs a moment before it answers
            note = health()
            if note is not None:
                break
            time.sleep(1)
        if note is None:
            raise ServiceStartError(
                f"MLflow does not answer at {site.health_url()}",
                hint="its pod is Ready but the host cannot reach it: check the port mapping "
                "(`sandbox status`) and that nothing else holds the port",
            )
        return note

    return KubeAction(
        "Stack ready (pods Ready, MLflow /health from the host)",
        run,
        None,
        done,
        (wait.line,),
        effects=Effects(waits=(("pod", namespace, "*"),)),
    )


def diagnose(tools: Tools, touched: list[str]) -> Callable[[], str]:
    """For `run_actions`: the failing pods' events and last log lines in every namespace the plan touches
    (``touched``: `namespaces`), read before the undo removes them."""

    def report() -> str:
        if tools.context is None:
            return ""
        parts = [tools.failing_pods_report(namespace) for namespace in touched]
        return "\n".join(part for part in parts if part)

    return report
