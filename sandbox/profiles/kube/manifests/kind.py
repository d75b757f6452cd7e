"""kind's side of the objects: the cluster config made from the GPU inventory, the fixed NodePorts, and how the
stack's Services are opened to the host through them (`reach.NodePortReach` applies these to the bundle).

kind maps each exposed NodePort to a 127.0.0.1 host port with `extraPortMappings` on the control-plane node; the
mappings are fixed when the cluster is made, so only the stack's services and KFP's API are reached this way
(a model deployment is reached through a port-forward on either profile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sandbox.gpu import render as gpu_render
from sandbox.gpu.inventory import GpuConfig
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.operators import KFP_API_PORT, KFP_API_SERVICE
from sandbox.profiles.kube.manifests.spec import KFP, LOOPBACK, MLFLOW, NOTEBOOKS, POSTGRES, S3, StackSpec, meta

KFP_NODEPORT_SERVICE = "ml-pipeline-host"
# kind's pod network, set explicitly in the kind config so a NetworkPolicy can name it.
KIND_POD_SUBNET = "10.244.0.0/16"
# The stack's Service behind each NodePorts key (KFP's API has a Service of the sandbox's own: `kfp_host_service`).
SERVICES = {"postgres": POSTGRES, "s3": S3, "mlflow": MLFLOW, "notebooks": NOTEBOOKS}


@dataclass(frozen=True)
class NodePorts:
    """The fixed NodePorts (kind maps each to a 127.0.0.1 host port)."""

    postgres: int = 30432
    s3: int = 30333
    mlflow: int = 30500
    notebooks: int = 30888
    kfp: int = 30880

    def __post_init__(self) -> None:
        values = self.as_dict()
        for key, port in values.items():
            if not 30000 <= port <= 32767:
                raise ValueError(f"node_ports.{key} = {port} is outside Kubernetes' NodePort range 30000-32767")
        if len(set(values.values())) != len(values):
            raise ValueError(f"node_ports must be distinct: {values}")

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


def exposed_ports(spec: StackSpec, node_ports: NodePorts | None = None) -> dict[str, int]:
    """The NodePorts that exist for this spec, by NodePorts key (JupyterLab's only with notebooks on)."""
    ports = (node_ports or NodePorts()).as_dict()
    if not spec.notebooks:
        ports.pop("notebooks")
    return ports


def cluster_config(gpu: GpuConfig, *, name: str) -> dict[str, Any]:
    """The kind config of the inventory (`sandbox gpu render`'s), every node's image pinned, the pod network named;
    no host port yet (`with_port_mappings`)."""
    config = gpu_render.kind_config(gpu, name=name)
    config["networking"] = {"podSubnet": KIND_POD_SUBNET}
    for node in config["nodes"]:
        node["image"] = versions.KIND_NODE_IMAGE
    return config


def port_mappings(ports: Mapping[str, int], host_ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """Each NodePort in ``ports`` (by key) mapped to its host port, on 127.0.0.1 only."""
    missing = sorted(set(ports) - set(host_ports))
    if missing:
        raise ValueError(f"no host port given for {', '.join(missing)}")
    return [
        {"containerPort": node_port, "hostPort": int(host_ports[key]), "listenAddress": LOOPBACK, "protocol": "TCP"}
        for key, node_port in ports.items()
    ]


def with_port_mappings(config: dict[str, Any], mappings: list[dict[str, Any]]) -> dict[str, Any]:
    """``config`` with ``mappings`` on its control-plane node (where kind publishes host ports)."""
    for node in config["nodes"]:
        if node["role"] == "control-plane" and mappings:
            node["extraPortMappings"] = mappings
    return config


def as_node_port(service: dict[str, Any], node_port: int) -> dict[str, Any]:
    """A Service of the stack opened on a NodePort (its first port)."""
    service["spec"]["type"] = "NodePort"
    service["spec"]["ports"][0]["nodePort"] = node_port
    return service


def kfp_host_service(spec: StackSpec, node_port: int) -> dict[str, Any]:
    """A NodePort Service of the sandbox's own in front of KFP's API (KFP's `svc/ml-pipeline` stays as it is)."""
    port = {"name": "http", "port": KFP_API_PORT, "targetPort": KFP_API_PORT, "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec, KFP, KFP_NODEPORT_SERVICE, versions.KFP_NAMESPACE),
        "spec": {
            "type": "NodePort",
            "selector": {"app": KFP_API_SERVICE},  # KFP's own selector for svc/ml-pipeline
            "ports": [{**port, "nodePort": node_port}],
        },
    }
