"""The Kubernetes profiles' objects, offline: every rendered object validates against the pinned
Kubernetes minor's schemas (kubernetes-validate, strict), KServe objects against the SDK's models,
the kind config against kind's documented fields; an invalid object is named; labels, credentials,
ports, file modes and pins are held to their rules. No cluster, no network."""

from __future__ import annotations

import copy
import dataclasses
import re
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.gpu.inventory import GpuConfig, NodeSpec, QuotaSpec, Taint
from sandbox.profiles.kube import actions, upstream, validate, versions
from sandbox.profiles.kube.manifests import bundle as stack_bundle
from sandbox.profiles.kube.manifests import gpu, kind, mlflow, operators
from sandbox.profiles.kube.manifests import spec as m
from sandbox.profiles.kube.manifests.bundle import Bundle, Part
from sandbox.profiles.kube.manifests.kind import NodePorts
from sandbox.profiles.kube.manifests.spec import StackSecrets, StackSpec
from sandbox.profiles.kube.reach import NodePortReach
from sandbox.profiles.kube.state import KubeState
from sandbox.tracking_server import _parser as tracking_parser

ROOT = Path(__file__).resolve().parents[2]
HOST_PORTS = {"postgres": 15432, "s3": 18333, "mlflow": 15000, "notebooks": 18888, "kfp": 18880}
IMAGE = "ml-sandbox:0.1.0"
SECRETS = StackSecrets.generate()


def example_gpu() -> GpuConfig:
    """The GPU inventory of the repository's sandbox.example.yaml (real GPUs off: none here)."""
    section = yaml.safe_load((ROOT / "sandbox.example.yaml").read_text())["gpu"]
    return GpuConfig.model_validate({**section, "real_gpus": "off"})


def real_gpu() -> GpuConfig:
    """An inventory with this machine's GPUs in it, built directly (no NVML): what `inventory_nodes` adds."""
    taint = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
    real = NodeSpec(name="local-gpu", gpus=2, gpu_product="NVIDIA-L4", gpu_memory="23034Mi", taints=[taint], real=True)
    return GpuConfig(real_gpus="auto", nodes=[*example_gpu().nodes, real])


SPECS = {
    "default": StackSpec(instance="test", secrets=SECRETS, image=IMAGE),
    "minio": StackSpec(instance="test", secrets=SECRETS, image=IMAGE, object_store="minio"),
    "no-notebooks": StackSpec(instance="test", secrets=SECRETS, image=IMAGE, notebooks=False),
    "cluster-ip": StackSpec(instance="test", secrets=SECRETS, image=IMAGE),
    "example-gpu": StackSpec(instance="example", secrets=SECRETS, image=IMAGE, gpu=example_gpu()),
    "real-gpu": StackSpec(instance="real", secrets=SECRETS, image=IMAGE, gpu=real_gpu()),
    "other-namespace": StackSpec(
        instance="team-a.run_1",
        secrets=SECRETS,
        image="registry.example.com/ml-sandbox:1.2.3",
        namespace="team-a",
        buckets=("mlflow-artifacts", "data", "features"),
        gpu=GpuConfig(real_gpus="off", quotas=[QuotaSpec(namespace="gpu-jobs", hard={"requests.nvidia.com/gpu": "2"})]),
    ),
}


ON_A_GIVEN_CLUSTER = {"cluster-ip"}  # reached through port-forwards: no kind config, no NodePort


def kind_bundle(spec: StackSpec, host_ports: dict[str, int] = HOST_PORTS) -> Bundle:
    """What the kind profile applies for ``spec``: the stack's parts, kind's cluster config first, the Services
    opened on NodePorts mapped to ``host_ports`` (what `KindCluster.complete` and `NodePortReach.expose` do)."""
    config = kind.cluster_config(spec.gpu, name="ml-sandbox")
    made = stack_bundle.bundle(spec).with_part(Part("kind-config", "kind", "cluster", config=config), first=True)
    state = KubeState(spec.instance, "kind-ml-sandbox", spec.namespace, dict(host_ports), cluster="ml-sandbox")
    return NodePortReach(Path("/nonexistent"), notebooks=spec.notebooks).expose(made, state)


def applied(name: str) -> Bundle:
    spec = SPECS[name]
    return stack_bundle.bundle(spec) if name in ON_A_GIVEN_CLUSTER else kind_bundle(spec)


def kind_config(spec: StackSpec) -> dict:
    return kind_bundle(spec).kind_config


def everything(name: str) -> list[dict]:
    return applied(name).objects()


def walk(value, path=()):
    """Every (path, scalar) in a nested structure."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*path, index))
    else:
        yield path, value


def pod_templates(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return [spec["template"]]
    return []


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", SPECS)
def test_every_rendered_object_validates(name):
    assert validate.validate_bundle(applied(name)) == []


def test_the_kind_config_validates_and_maps_every_nodeport_on_loopback():
    spec = SPECS["example-gpu"]
    config = kind_config(spec)
    assert validate.validate_kind_config(config) == []
    control = [n for n in config["nodes"] if n["role"] == "control-plane"]
    assert len(control) == 1
    mappings = control[0]["extraPortMappings"]
    assert {m["listenAddress"] for m in mappings} == {"127.0.0.1"}
    assert {m["protocol"] for m in mappings} == {"TCP"}
    assert {m["containerPort"]: m["hostPort"] for m in mappings} == {
        NodePorts().as_dict()[key]: port for key, port in HOST_PORTS.items()
    }
    assert all(n["image"] == versions.KIND_NODE_IMAGE for n in config["nodes"])
    # One worker per (fake) inventory node, with its taints registered through kubeadm.
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert len(workers) == len(spec.gpu.nodes)
    tainted = [w for w in workers if w.get("kubeadmConfigPatches")]
    assert len(tainted) == 2


def test_every_service_nodeport_is_in_range_and_mapped_by_kind():
    for name in SPECS:
        config = applied(name).kind_config
        mapped = {p["containerPort"] for n in (config or {}).get("nodes", []) for p in n.get("extraPortMappings", [])}
        node_ports = [
            port["nodePort"]
            for obj in everything(name)
            if obj["kind"] == "Service"
            for port in obj["spec"]["ports"]
            if "nodePort" in port
        ]
        assert all(30000 <= p <= 32767 for p in node_ports), name
        assert set(node_ports) == mapped, name
        if name in ON_A_GIVEN_CLUSTER:
            assert node_ports == [] and config is None, name


def _broken_deployment() -> dict:
    deployment = next(o for o in stack_bundle.stack_objects(SPECS["default"]) if o["kind"] == "Deployment")
    return copy.deepcopy(deployment)


def test_an_unknown_field_is_named_with_its_object():
    broken = _broken_deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    problems = validate.validate_objects([broken])
    assert len(problems) == 1
    assert problems[0].startswith("Deployment ml-sandbox/s3: spec.template.spec.containers[0]")
    assert "imagePullPolicyy" in problems[0]


def test_a_wrong_type_is_named_with_its_object():
    broken = _broken_deployment()
    broken["spec"]["replicas"] = "one"
    problems = validate.validate_objects([broken])
    assert problems == [problems[0]] and problems[0].startswith("Deployment ml-sandbox/s3: spec.replicas:")
    assert "'one'" in problems[0]


def test_a_broken_object_fails_the_bundles_validation(monkeypatch):
    """The whole path `render` relies on: one bad field in one object, and the check says which."""
    original = mlflow.objects

    def broken_mlflow(spec):
        objects = original(spec)
        objects[0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
        return objects

    monkeypatch.setattr(mlflow, "objects", broken_mlflow)
    problems = validate.validate_bundle(stack_bundle.bundle(SPECS["default"]))
    assert len(problems) == 1 and problems[0].startswith("Deployment ml-sandbox/mlflow: spec.template.spec")
    with pytest.raises(validate.InvalidObject, match="Deployment ml-sandbox/mlflow"):
        validate.check_objects(stack_bundle.stack_objects(SPECS["default"]))


def test_a_kind_without_a_schema_is_reported_not_passed():
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "n"}}
    problems = validate.validate_objects([unknown])
    assert problems == ["Widget n/w: no schema for example.com/v1 Widget in Kubernetes 1.36"]


def test_duplicate_objects_are_reported():
    namespace = stack_bundle.stack_objects(SPECS["default"])[0]
    assert validate.validate_objects([namespace, namespace]) == ["Namespace ml-sandbox: appears twice"]


def inference_service() -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "model", "namespace": "ml-sandbox", "labels": {"app.kubernetes.io/managed-by": "x"}},
        "spec": {
            "predictor": {
                "serviceAccountName": "s3-reader",
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": "s3://mlflow-artifacts/1/models/m-1/artifacts",
                    "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": 1}},
                },
            }
        },
    }


def test_kserve_objects_are_checked_with_the_sdk_models():
    assert validate.validate_objects([inference_service()]) == []
    unknown = inference_service()
    unknown["spec"]["predictor"]["model"]["storageURI"] = unknown["spec"]["predictor"]["model"].pop("storageUri")
    assert validate.validate_objects([unknown]) == [
        "InferenceService ml-sandbox/model: spec.predictor.model.storageURI: unknown field"
    ]
    wrong = inference_service()
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    assert validate.validate_objects([wrong]) == [
        "InferenceService ml-sandbox/model: spec.predictor.minReplicas: expected int, got str"
    ]


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda c: c["nodes"][0]["extraPortMappings"][0].update(listenAddress="0.0.0.0"), "listenAddress"),
        (lambda c: c["nodes"][0].update(extraPortMapings=[]), "extraPortMapings"),
        (lambda c: c["nodes"][1].update(labels=["not", "a", "map"]), "labels"),
        (lambda c: c["nodes"][1].update(kubeadmConfigPatches=["just text"]), "kubeadmConfigPatches"),
        (lambda c: c["nodes"][0].update(role="master"), "role"),
        (lambda c: c["nodes"][0].update(image="kindest/node:v1.36.1"), "not pinned by digest"),
        (lambda c: c.update(apiVersion="kind.x-k8s.io/v1alpha3"), "apiVersion"),
        (lambda c: c["nodes"][0]["extraPortMappings"].append(dict(c["nodes"][0]["extraPortMappings"][0])), "twice"),
    ],
)
def test_the_kind_config_check_names_the_bad_field(change, field):
    config = kind_config(SPECS["example-gpu"])
    change(config)
    problems = validate.validate_kind_config(config)
    assert problems and all(p.startswith("kind Cluster ml-sandbox:") for p in problems)
    assert any(field in p for p in problems), problems


def test_a_real_gpu_node_gets_nvkinds_mount_its_labels_and_taints_and_validates():
    spec = SPECS["real-gpu"]
    config = kind_config(spec)
    assert validate.validate_kind_config(config) == []
    assert validate.validate_bundle(applied("real-gpu")) == []
    workers = {n["labels"]["ml-sandbox/inventory-node"]: n for n in config["nodes"] if n["role"] == "worker"}
    real = workers["local-gpu"]
    assert real["extraMounts"] == [{"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}]
    assert real["labels"]["nvidia.com/gpu.present"] == "true" and real["labels"]["nvidia.com/gpu.count"] == "2"
    assert real["image"] == versions.KIND_NODE_IMAGE
    patch = yaml.safe_load(real["kubeadmConfigPatches"][0])
    assert patch["nodeRegistration"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert not any("extraMounts" in n for name, n in workers.items() if name != "local-gpu")  # fake GPUs: no mount
    # kind's documented mount fields only.
    real["extraMounts"][0]["hostpath"] = real["extraMounts"][0].pop("hostPath")
    assert any("extraMounts" in p for p in validate.validate_kind_config(config))


def test_real_gpus_bring_the_runtime_class_and_the_pinned_device_plugin_and_nothing_without_them():
    spec = SPECS["real-gpu"]
    (runtime_class,) = gpu.real_gpu_objects(spec)
    assert runtime_class["kind"] == "RuntimeClass" and runtime_class["handler"] == "nvidia"
    assert validate.validate_objects([runtime_class]) == []
    broken = copy.deepcopy(runtime_class)
    broken["handler"] = ["nvidia"]  # not a string: the schema refuses it
    assert any("RuntimeClass nvidia" in p and "handler" in p for p in validate.validate_objects([broken]))
    release = gpu.device_plugin_release(spec)
    assert (release.chart.name, release.chart.version) == ("nvidia-device-plugin", "0.19.3")
    assert release.values["runtimeClassName"] == "nvidia"
    assert release.values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for name in ("default", "example-gpu"):
        assert gpu.real_gpu_objects(SPECS[name]) == [] and gpu.device_plugin_release(SPECS[name]) is None


def test_render_writes_the_real_gpu_objects(tmp_path):
    written = stack_bundle.render(applied("real-gpu"), tmp_path)
    names = [p.name for p in written]
    assert "gpu-01-runtimeclass-nvidia.yaml" in names and "gpu-helm-values-nvidia-device-plugin.yaml" in names
    values = (tmp_path / "gpu-helm-values-nvidia-device-plugin.yaml").read_text()
    assert values.startswith("# helm upgrade --install nvidia-device-plugin nvidia-device-plugin --version 0.19.3")
    assert yaml.safe_load(values)["runtimeClassName"] == "nvidia"


# --------------------------------------------------------------------------- labels and credentials


@pytest.mark.parametrize("name", SPECS)
def test_every_object_and_pod_carries_the_labels(name):
    spec = SPECS[name]
    theirs = set(upstream.all_objects())
    for obj in everything(name):
        if actions.ref_of(obj) in theirs:  # KFP's Secret: changed, never labelled (`down` would delete it)
            assert "labels" not in obj["metadata"], validate.describe(obj)
            continue
        got = obj["metadata"]["labels"]
        assert got["app.kubernetes.io/managed-by"] == m.MANAGED_BY, validate.describe(obj)
        assert got["app.kubernetes.io/instance"] == spec.instance, validate.describe(obj)
        assert got == m.labels(spec, got["app.kubernetes.io/component"])
        for template in pod_templates(obj):
            assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == spec.instance
        for claim in obj.get("spec", {}).get("volumeClaimTemplates", []):
            assert claim["metadata"]["labels"]["app.kubernetes.io/managed-by"] == m.MANAGED_BY


def secret_values(secrets: StackSecrets) -> list[str]:
    return [getattr(secrets, name) for name in vars(secrets)]


@pytest.mark.parametrize("name", SPECS)
def test_credentials_live_in_secrets_only(name):
    spec = SPECS[name]
    values = secret_values(spec.secrets)
    for obj in everything(name):
        if obj["kind"] == "Secret":
            continue
        for path, scalar in walk(obj):
            if isinstance(scalar, str):
                leaked = [v for v in values if v in scalar]
                assert not leaked, f"{validate.describe(obj)} {path} carries a credential"
    text = yaml.safe_dump_all([o for o in everything(name) if o["kind"] == "Secret"])
    expected = [v for v in values if spec.notebooks or v != spec.secrets.jupyter_token]
    assert all(v in text for v in expected)


@pytest.mark.parametrize("name", SPECS)
def test_no_default_or_well_known_credential_is_rendered(tmp_path, name):
    spec = SPECS[name]
    stack_bundle.render(applied(name), tmp_path)
    text = "\n".join(path.read_text() for path in sorted(tmp_path.iterdir()))
    assert "minio123" not in text
    assert not re.search(r"[&*]id\d+", text), "plain YAML, no anchors"
    for document in (d for path in tmp_path.iterdir() for d in yaml.safe_load_all(path.read_text())):
        for path, scalar in walk(document):
            if path[-1] != "name":  # a container may be called minio; a credential may not be
                assert scalar not in (m.KFP_STOCK_ACCESS_KEY, m.KFP_STOCK_SECRET_KEY), path
            # No password-looking literal in a pod's env: credentials come from secretKeyRef.
            if "env" in path and path[-1] == "value" and isinstance(scalar, str):
                assert not re.search(r"(?i)password|secret", scalar), path
    assert m.KFP_STOCK_ACCESS_KEY not in operators.kfp_rotate_keys_command()[-1].split()
    kfp_secret = next(o for o in operators.kfp_objects(spec) if o["kind"] == "Secret")
    assert kfp_secret["metadata"] == {"name": "mlpipeline-minio-artifact", "namespace": "kubeflow"}
    assert kfp_secret["stringData"] == {
        "accesskey": spec.secrets.kfp_s3_access_key,
        "secretkey": spec.secrets.kfp_s3_secret_key,
    }


def test_secrets_are_generated_fresh_and_never_printed():
    first, second = StackSecrets.generate(), StackSecrets.generate()
    assert all(a != b for a, b in zip(secret_values(first), secret_values(second), strict=True))
    assert all(re.fullmatch(r"[A-Za-z0-9]{16,}", v) for v in secret_values(first))
    assert re.fullmatch(r"[A-Z0-9]{20}", first.s3_access_key)
    assert first.s3_access_key not in repr(first) and "hidden" in repr(first)
    with pytest.raises(ValueError, match="postgres_password"):
        StackSecrets(**{**vars(first), "postgres_password": "short"})
    with pytest.raises(ValueError, match="at least 16"):
        StackSecrets(**{**vars(first), "kfp_s3_access_key": "minio"})


# --------------------------------------------------------------------------- render


def test_render_writes_private_files_numbered_in_apply_order(tmp_path):
    spec = SPECS["default"]
    config = kind_config(spec)
    paths = stack_bundle.render(kind_bundle(spec), tmp_path / "out")
    names = [p.name for p in paths]
    assert names == sorted(names), "lexical order is apply order"
    assert names[0] == "00-kind-config.yaml" and names[1] == "10-namespace-ml-sandbox.yaml"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # nothing else written
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    numbered = [int(n.split("-", 1)[0]) for n in names if n[0].isdigit()]
    assert numbered == sorted(numbered) and len(set(numbered)) == len(numbered)
    # The files hold exactly the objects, in order.
    objects = [yaml.safe_load(p.read_text()) for p in paths if p.name[:2].isdigit() and p.name != names[0]]
    assert objects == kind_bundle(spec).objects("stack")
    assert yaml.safe_load(paths[0].read_text()) == config
    helm = [p for p in paths if p.name.startswith("helm-values-")]
    assert [p.name for p in helm] == [
        "helm-values-01-cert-manager.yaml",
        "helm-values-02-kserve-crd.yaml",
        "helm-values-03-kserve.yaml",
        "helm-values-04-kserve-runtime-configs.yaml",
    ]
    assert "--version v1.17.0" in helm[0].read_text().splitlines()[0]
    kfp = [yaml.safe_load(p.read_text()) for p in paths if p.name.startswith("kfp-")]
    assert kfp == list(kind_bundle(spec).part("kfp").objects)


def test_render_numbers_many_objects_in_order(tmp_path):
    quotas = [QuotaSpec(namespace="default", name=f"q{i}", hard={"count/pods": "5"}) for i in range(60)]
    spec = StackSpec(instance="many", secrets=SECRETS, image=IMAGE, gpu=GpuConfig(real_gpus="off", quotas=quotas))
    names = [p.name for p in stack_bundle.render(stack_bundle.bundle(spec), tmp_path)]
    assert len(names) > 100 and names == sorted(names)
    assert names[0] == "010-namespace-ml-sandbox.yaml"


def test_render_again_replaces_the_files(tmp_path):
    spec = SPECS["default"]
    first = stack_bundle.render(stack_bundle.bundle(spec), tmp_path)
    second = stack_bundle.render(stack_bundle.bundle(spec), tmp_path)
    assert first == second
    assert "00-kind-config.yaml" not in [p.name for p in first]


# --------------------------------------------------------------------------- the objects


def test_apply_order_and_contents_of_the_stack():
    spec = SPECS["default"]
    kinds = [(o["kind"], o["metadata"]["name"]) for o in stack_bundle.stack_objects(spec)]
    assert kinds[0] == ("Namespace", "ml-sandbox")
    assert kinds.index(("ResourceQuota", "compute-quota")) < kinds.index(("Secret", "postgres-credentials"))
    order = [("StatefulSet", "postgres"), ("Deployment", "s3"), ("Job", "create-buckets"), ("Deployment", "mlflow")]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    assert kinds[-3:] == [
        ("PersistentVolumeClaim", "notebooks-workspace"),
        ("Deployment", "jupyterlab"),
        ("Service", "jupyterlab"),
    ]
    # Every container has a readiness probe (Jobs excepted) and modest requests.
    for obj in stack_bundle.stack_objects(spec):
        for template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                if obj["kind"] != "Job":
                    assert "readinessProbe" in container, validate.describe(obj)
                requests = container["resources"]["requests"]
                assert requests["cpu"].endswith("m") and int(requests["cpu"][:-1]) <= 100
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert template["spec"]["automountServiceAccountToken"] is False


def test_postgres_makes_the_monitoring_database_and_mlflow_uses_psycopg():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in stack_bundle.stack_objects(SPECS["default"])}
    init = objects[("ConfigMap", "postgres-init")]["data"]
    assert "CREATE DATABASE monitoring OWNER mlflow;" in "".join(init.values())
    statefulset = objects[("StatefulSet", "postgres")]
    assert statefulset["spec"]["serviceName"] == "postgres-headless"
    assert objects[("Service", "postgres-headless")]["spec"]["clusterIP"] == "None"
    uri = objects[("Secret", "mlflow-backend")]["stringData"]["backend-store-uri"]
    assert uri.startswith("postgresql+psycopg://mlflow:") and uri.endswith(
        "@postgres.ml-sandbox.svc.cluster.local:5432/mlflow"
    )
    args = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts"
    job = objects[("Job", "create-buckets")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "BUCKETS", "value": "mlflow-artifacts,data"} in job["env"]


def test_seaweedfs_takes_its_identity_from_the_secret():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in stack_bundle.stack_objects(SPECS["default"])}
    config = yaml.safe_load(objects[("Secret", "s3-credentials")]["stringData"]["s3.json"])
    assert config["identities"][0]["credentials"] == [
        {"accessKey": SECRETS.s3_access_key, "secretKey": SECRETS.s3_secret_key}
    ]
    container = objects[("Deployment", "s3")]["spec"]["template"]["spec"]["containers"][0]
    assert "-s3.config=/etc/seaweedfs/s3.json" in container["args"]
    minio = {(o["kind"], o["metadata"]["name"]): o for o in stack_bundle.stack_objects(SPECS["minio"])}
    assert "s3.json" not in minio[("Secret", "s3-credentials")]["stringData"]
    env = minio[("Deployment", "s3")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "MINIO_ROOT_USER",
        "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "access-key"}},
    } in env


def test_mlflow_accepts_exactly_the_hosts_it_is_reached_by():
    from mlflow.server.security_utils import is_allowed_host_header

    spec = SPECS["default"]
    narrow = mlflow.allowed_hosts(dataclasses.replace(spec, host_ports=HOST_PORTS))
    wide = mlflow.allowed_hosts(spec)
    for allowed in (narrow, wide):
        for host in ("mlflow", "mlflow:5000", "mlflow.ml-sandbox.svc.cluster.local:5000", "127.0.0.1:15000"):
            assert is_allowed_host_header(allowed, host), host
        for host in ("evil.example.com", "10.0.0.7:5000", "mlflow.other-ns:5000"):
            assert not is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(narrow, "127.0.0.1:15001")
    assert is_allowed_host_header(wide, "localhost:31234")


def test_the_kube_deployment_runs_the_same_entry_point():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in stack_bundle.stack_objects(SPECS["default"])}
    container = objects[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "sandbox.tracking_server"]
    args = tracking_parser().parse_args(container["args"])
    assert (args.host, args.workers, args.artifacts_destination) == ("0.0.0.0", 1, "s3://mlflow-artifacts")
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"  # else the entry point refuses to start
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]


def test_quotas_go_to_the_stack_namespace_unless_they_name_another():
    default = stack_bundle.stack_objects(SPECS["default"])
    quota = next(o for o in default if o["kind"] == "ResourceQuota")
    assert quota["metadata"]["namespace"] == "ml-sandbox"
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    other = stack_bundle.stack_objects(SPECS["other-namespace"])
    names = [o["metadata"]["name"] for o in other if o["kind"] == "Namespace"]
    assert names == ["team-a", "gpu-jobs"]
    assert {o["metadata"]["namespace"] for o in other if o["kind"] == "LimitRange"} == {"gpu-jobs"}


def test_kfp_api_is_exposed_on_a_nodeport_and_no_network_policy_selects_kfp():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in applied("default").part("kfp").objects}
    service = objects[("Service", kind.KFP_NODEPORT_SERVICE)]
    assert service["metadata"]["namespace"] == "kubeflow"
    assert service["spec"]["ports"][0]["nodePort"] == NodePorts().kfp
    # kindnet enforces every NetworkPolicy and KFP ships none that admits its own namespace: a policy selecting
    # `app: ml-pipeline` would drop the persistence agent's, the scheduled-workflow controller's and the run
    # drivers' calls to 8888/8887 (issue 22, defect 2).
    assert not [o for name in SPECS for o in everything(name) if o["kind"] == "NetworkPolicy"]
    assert [o["kind"] for o in applied("cluster-ip").part("kfp").objects] == ["Secret"]
    command = operators.kfp_rotate_keys_command()
    assert command[:5] == ["kubectl", "-n", "kubeflow", "exec", "deploy/seaweedfs"]
    assert set(operators.KFP_RESTART) == {"seaweedfs", "ml-pipeline", "ml-pipeline-ui"}


def test_helm_releases_in_order_with_standard_mode():
    releases = operators.helm_releases(SPECS["default"])
    assert [r.name for r in releases] == ["cert-manager", "kserve-crd", "kserve", "kserve-runtime-configs"]
    assert releases[0].values == {"crds": {"enabled": True}}
    assert releases[2].chart.name == "kserve-resources"
    assert releases[2].values["kserve"]["controller"]["deploymentMode"] == "Standard"
    assert releases[3].values["kserve"]["servingruntime"]["enabled"] is True


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    "change, message",
    [
        ({"namespace": "Bad_Name"}, "namespace"),
        ({"namespace": "kubeflow"}, "Kubeflow Pipelines"),
        ({"instance": "-bad"}, "instance"),
        ({"instance": "x" * 64}, "instance"),
        ({"buckets": ("data",)}, "mlflow-artifacts"),
        ({"buckets": ("mlflow-artifacts", "Bad")}, "bucket"),
        ({"object_store": "s3fs"}, "object_store"),
        ({"image": "has space"}, "image"),
    ],
)
def test_a_bad_spec_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        StackSpec(**{"instance": "test", "secrets": SECRETS, "image": IMAGE, **change})


def test_node_ports_are_in_range_and_distinct():
    with pytest.raises(ValueError, match="30000-32767"):
        NodePorts(mlflow=8080)
    with pytest.raises(ValueError, match="distinct"):
        NodePorts(mlflow=30432)
    with pytest.raises(ValueError, match="no host port given for kfp, mlflow, notebooks, s3"):
        kind_bundle(SPECS["default"], host_ports={"postgres": 1})


def test_stack_id_makes_a_label_value_of_anything():
    assert m.stack_id("/home/me/.ml sandbox/") == "home-me-.ml-sandbox"
    assert m.stack_id("///") == "sandbox"
    assert len(m.stack_id("a" * 100)) == 63


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    namespace=_label.filter(lambda n: n != "kubeflow"),
    instance=st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,40}[A-Za-z0-9])?", fullmatch=True),
    on_kind=st.booleans(),
    notebooks=st.booleans(),
)
def test_any_valid_names_render_valid_objects(namespace, instance, on_kind, notebooks):
    spec = StackSpec(instance=instance, secrets=SECRETS, image=IMAGE, namespace=namespace, notebooks=notebooks)
    assert validate.validate_bundle(kind_bundle(spec) if on_kind else stack_bundle.bundle(spec)) == []


# --------------------------------------------------------------------------- pins


def test_the_kind_node_image_is_pinned_by_digest_to_the_kubernetes_version():
    assert re.fullmatch(r"kindest/node:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", versions.KIND_NODE_IMAGE)
    assert versions.KIND_NODE_IMAGE.startswith(f"kindest/node:v{versions.KUBERNETES_VERSION}@")
    assert versions.kubernetes_minor() == "1.36"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.KIND_VERSION)


def test_charts_kustomizations_and_images_are_pinned_exactly():
    for chart in (
        versions.CERT_MANAGER,
        versions.KSERVE_CRD,
        versions.KSERVE_RESOURCES,
        versions.KSERVE_RUNTIME_CONFIGS,
    ):
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", chart.version), chart
        assert chart.repo.startswith(("https://", "oci://")), chart
    assert versions.KSERVE_RESOURCES.ref == "oci://ghcr.io/kserve/charts/kserve-resources"
    assert versions.CERT_MANAGER.ref == "cert-manager" and not versions.CERT_MANAGER.oci
    assert len(versions.KFP_KUSTOMIZE) == 2
    assert all(url.endswith(f"?ref={versions.KFP_VERSION}") for url in versions.KFP_KUSTOMIZE)
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions.KFP_VERSION)
    for name, image in versions.IMAGES.items():
        reference = image.split("@")[0]
        tag = reference.rsplit(":", 1)[1]
        assert tag and tag != "latest" and "/" not in tag, name
    assert set(versions.MIN_TOOLS) == {"docker", "kind", "kubectl", "helm"}
    assert versions.project_image("1.2.3") == f"{versions.PROJECT_IMAGE_REPO}:1.2.3"


def test_every_container_image_comes_from_the_pins_or_the_project():
    pinned = set(versions.IMAGES.values())
    for name, spec in SPECS.items():
        for obj in everything(name):
            for template in pod_templates(obj):
                for container in template["spec"]["containers"]:
                    assert container["image"] in pinned | {spec.image}, validate.describe(obj)


def test_the_scripts_run_in_pods_parse():
    """The bucket Job's Python and the KFP key rotation's shell, as they would run there."""
    import shutil
    import subprocess

    job = next(o for o in stack_bundle.stack_objects(SPECS["default"]) if o["kind"] == "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "create-buckets", "exec")
    shell = operators.kfp_rotate_keys_command()[-1]
    sh = shutil.which("sh")
    assert sh, "a POSIX shell is needed to parse the script"
    assert subprocess.run([sh, "-n", "-c", shell], capture_output=True).returncode == 0
    # It checks both keys are in the environment before it deletes the identity.
    assert shell.index("secretkey:?") < shell.index("-delete")


def test_the_scripts_are_package_data_and_every_placeholder_is_filled():
    import tomllib

    package = Path(m.__file__).parent
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {path.name for pattern in data["sandbox.profiles.kube.manifests"] for path in package.glob(pattern)}
    assert shipped == {path.name for path in (package / "scripts").iterdir() if path.name != "ruff.toml"}
    with pytest.raises(ValueError, match=r"takes \['KFP_S3_USER'\], was given \[\]"):
        m.script("kfp-rotate-keys.sh")
    with pytest.raises(ValueError, match="takes"):
        m.script("nvidia-proc.sh", UNUSED="x")
    for _, text in gpu.nvidia_node_scripts():
        assert "@" not in text
