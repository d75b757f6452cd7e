"""The cluster and its nodes, kind's part of the bring-up: the kind cluster from the GPU inventory, fake GPUs on
the nodes' status, and this machine's real GPUs the way NVIDIA's nvkind hands them to kind nodes."""

from __future__ import annotations

from typing import Any

import yaml

from sandbox.errors import ServiceStartError
from sandbox.files import write_private
from sandbox.gpu.inventory import NodeSpec
from sandbox.gpu.render import INVENTORY_LABEL, gpu_capacity_patch
from sandbox.profiles.kube import upstream, versions
from sandbox.profiles.kube.manifests.bundle import Part
from sandbox.profiles.kube.manifests.gpu import fake_gpu_nodes, nvidia_node_scripts, real_gpu_nodes
from sandbox.profiles.kube.plan import Effects, KubeAction, Site
from sandbox.profiles.kube.tools import Command


def kind_cluster(site: Site, name: str, part: Part, host_ports: dict[str, int]) -> KubeAction:
    """The kind cluster ``name`` from the bundle's cluster config (``part``), its ``host_ports`` mapped."""
    tools = site.tools
    if part.config is None:
        raise ValueError("kind_cluster needs the bundle's kind config")
    cluster_config = part.config
    config = site.workdir / "kind-config.yaml"
    create = tools.kind_create(name, config, node_image=versions.KIND_NODE_IMAGE, wait_s=site.timeouts.cluster)

    def done() -> str | None:
        return f"cluster {name} exists" if name in tools.kind_clusters() else None

    def run() -> str:
        write_private(config, yaml.safe_dump(cluster_config, sort_keys=False))
        tools.run(create)
        ports = ", ".join(f"{key} {port}" for key, port in host_ports.items())
        return f"{len(cluster_config['nodes'])} nodes; host ports on 127.0.0.1: {ports}"

    return KubeAction(
        f"kind cluster {name} ({versions.KIND_NODE_IMAGE.split('@')[0]})",
        run,
        lambda: tools.run(tools.kind_delete(name)),
        done,
        (create.line,),
        undo_on_failure=True,  # kind deletes a half-made cluster itself; deleting again is harmless
        effects=Effects(creates=(("node", "", "*"), ("namespace", "", "default"))),
    )


def fake_gpus(site: Site) -> KubeAction:
    """Advertise `nvidia.com/gpu` on each inventory GPU node's status (scheduling only: no device).

    A node's restart drops a patched status; the done-check reads it back, so the next `up` re-applies it.
    """
    tools, gpu_nodes = site.tools, fake_gpu_nodes(site.spec)

    def inventory_nodes() -> dict[str, dict[str, Any]]:
        listed = tools.get_json("nodes", selector=INVENTORY_LABEL) or {}
        return {node["metadata"]["labels"][INVENTORY_LABEL]: node for node in listed.get("items", [])}

    def missing() -> list[tuple[NodeSpec, str]]:
        nodes = inventory_nodes()
        todo = []
        for spec in gpu_nodes:
            node = nodes.get(spec.name)
            if node is None:
                raise ServiceStartError(
                    f"no node labelled {INVENTORY_LABEL}={spec.name} in the cluster",
                    hint="the kind config makes one worker per inventory node: recreate the cluster "
                    "(`sandbox down` then `sandbox up`) after changing gpu.nodes",
                )
            if node.get("status", {}).get("capacity", {}).get("nvidia.com/gpu") != str(spec.gpus):
                todo.append((spec, node["metadata"]["name"]))
        return todo

    def done() -> str | None:
        return None if missing() else _gpu_note(gpu_nodes)

    def run() -> str:
        for spec, node in missing():
            tools.run(tools.patch_node_status(node, gpu_capacity_patch(spec)))
        return _gpu_note(gpu_nodes)

    commands = tuple(
        tools.patch_node_status(f"<node labelled {INVENTORY_LABEL}={spec.name}>", gpu_capacity_patch(spec)).line
        for spec in gpu_nodes
    )
    # No undo: the patch lives on the node's status, which goes with the cluster.
    return KubeAction(
        "Fake GPUs (nvidia.com/gpu on the nodes' status)",
        run,
        None,
        done,
        commands,
        effects=Effects(waits=(("node", "", "*"),)),
    )


def real_gpus(site: Site, part: Part) -> KubeAction:
    """This machine's GPUs in the kind nodes that carry them, the way NVIDIA's nvkind does it (the bundle's
    `nodes` part: the RuntimeClass and the device plugin's release).

    The kind config already mounts them (`gpu.render.real_gpu_mounts`); then, per node, `docker exec` runs
    nvkind's scripts (`manifests.gpu.nvidia_node_scripts`: the NVIDIA container toolkit, nvidia as containerd's
    default runtime, /proc/driver/nvidia unmasked); then the `nvidia` RuntimeClass and NVIDIA's device
    plugin, which advertises the GPUs; done when each node's allocatable `nvidia.com/gpu` is its count.
    """
    tools, real_nodes = site.tools, real_gpu_nodes(site.spec)
    runtime_class = list(part.objects)
    release = part.release
    if release is None or not runtime_class or not real_nodes:
        raise ValueError("real_gpus needs a real GPU node in the spec's inventory")
    chart = release.chart
    values = site.workdir / "values" / f"{release.name}.yaml"
    install = tools.helm_upgrade(
        release.name,
        chart.ref,
        repo=chart.repo,
        version=chart.version,
        namespace=chart.namespace,
        values=values,
        wait_s=site.timeouts.helm,
    )
    apply = tools.apply(runtime_class)

    def node_scripts(node: str) -> list[Command]:
        return [
            tools.docker("exec", node, "bash", "-c", script, timeout_s=site.timeouts.gpu_setup)
            for _, script in nvidia_node_scripts()
        ]

    def allocatable_wait(node: str, spec: NodeSpec) -> Command:
        return tools.wait(
            f"node/{node}",
            f"jsonpath={{.status.allocatable.nvidia\\.com/gpu}}={spec.gpus}",
            timeout_s=site.timeouts.gpu_setup,
        )

    def nodes() -> list[tuple[NodeSpec, dict[str, Any]]]:
        listed = tools.get_json("nodes", selector=INVENTORY_LABEL) or {}
        by_name = {n["metadata"]["labels"][INVENTORY_LABEL]: n for n in listed.get("items", [])}
        found = []
        for spec in real_nodes:
            if spec.name not in by_name:
                raise ServiceStartError(
                    f"no node labelled {INVENTORY_LABEL}={spec.name} in the cluster",
                    hint="the kind config makes one worker per inventory node: recreate the cluster "
                    "(`sandbox down` then `sandbox up`) after changing gpu.nodes or gpu.real_gpus",
                )
            found.append((spec, by_name[spec.name]))
        return found

    def done() -> str | None:
        if tools.helm_releases(chart.namespace).get(release.name) != "deployed":
            return None
        for spec, node in nodes():
            if node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu") != str(spec.gpus):
                return None
        return _gpu_note(real_nodes) + " (real, advertised by the device plugin)"

    def run() -> str:
        found = nodes()
        for _, node in found:
            for command in node_scripts(node["metadata"]["name"]):
                tools.run(command)
        tools.run(apply)
        values.parent.mkdir(parents=True, exist_ok=True)
        write_private(values, yaml.safe_dump(release.values, sort_keys=False))
        tools.run(install)
        for spec, node in found:
            tools.run(allocatable_wait(node["metadata"]["name"], spec))
        return _gpu_note(real_nodes) + f" (real); {chart.name} {chart.version} in {chart.namespace}"

    def undo() -> None:
        # The toolkit installed in the nodes goes with the cluster; what the API holds is removed here.
        if release.name in tools.helm_releases(chart.namespace):
            tools.run(tools.helm_uninstall(release.name, namespace=chart.namespace))
        tools.run(tools.kubectl("delete", f"runtimeclass/{versions.NVIDIA_RUNTIME_CLASS}", "--ignore-not-found"))

    shown = [f"<node labelled {INVENTORY_LABEL}={spec.name}>" for spec in real_nodes]
    commands = [c.line for node in shown for c in node_scripts(node)]
    commands += [apply.line, install.line]
    commands += [allocatable_wait(node, spec).line for node, spec in zip(shown, real_nodes, strict=True)]
    return KubeAction(
        part.title,
        run,
        undo,
        done,
        tuple(commands),
        undo_on_failure=True,  # a failed --wait leaves the release "failed": uninstall it
        effects=Effects(
            applies=tuple(runtime_class),
            creates=upstream.helm_creates(chart),
            upstream=upstream.helm_creates(chart),
            waits=(("node", "", "*"),),
        ),
    )


def _gpu_note(nodes: list[NodeSpec]) -> str:
    return ", ".join(f"{node.name}: {node.gpus}" for node in nodes)
