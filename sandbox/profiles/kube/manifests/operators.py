"""The operators the stack runs on: cert-manager and KServe as Helm releases, and Kubeflow Pipelines' object-store
keys (KFP's own manifests are applied by `kubectl apply -k`, `versions.KFP_KUSTOMIZE`).

KFP standalone (kubeflow/pipelines manifests, 2.17.0): the Secret `KFP_SECRET` holds the object-store keys. The
stock one (third-party/seaweedfs/base/seaweedfs/mlpipeline-minio-artifact-secret.yaml) carries the well-known
`minio`/`minio123`; the SeaweedFS Deployment reads it with `envFrom` and its postStart hook runs
`s3.configure -user kubeflow-admin -access_key $accesskey ...` (which adds a key and never removes one); the API
server and the UI read it through `secretKeyRef`, run pods look it up by name. After it is replaced, those
Deployments must restart (`KFP_RESTART`) and the identity is made again with the new keys only
(`kfp_rotate_keys_command`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import KFP, StackSpec, script, secret, to_yaml
from sandbox.profiles.kube.versions import Chart

KFP_SECRET = "mlpipeline-minio-artifact"
KFP_S3_USER = "kubeflow-admin"
KFP_RESTART: tuple[str, ...] = ("seaweedfs", "ml-pipeline", "ml-pipeline-ui")
KFP_API_SERVICE = "ml-pipeline"
KFP_API_PORT = 8888
KFP_TITLE = f"Kubeflow Pipelines {versions.KFP_VERSION}"


@dataclass(frozen=True)
class HelmRelease:
    name: str
    chart: Chart
    values: dict[str, Any]

    def values_yaml(self) -> str:
        return to_yaml(self.values)

    def command_comment(self, timeout_s: int) -> str:
        """The `helm` command that installs it, as the first line of its rendered values file."""
        chart = self.chart
        return (
            f"# helm upgrade --install {self.name} {chart.ref} --version {chart.version}"
            f"{'' if chart.oci else ' --repo ' + chart.repo}"
            f" --namespace {chart.namespace} --create-namespace --wait --timeout {timeout_s}s"
            f" -f THIS_FILE\n"
        )


def helm_releases(spec: StackSpec) -> list[HelmRelease]:
    """cert-manager, then KServe (CRDs, controller in Standard mode, runtimes), in install order."""
    del spec  # the same releases for every stack; the argument keeps the call uniform
    # Standard mode: plain Deployments and Services, no Knative, no Istio, no Ingress objects.
    resources = {"kserve": {"controller": {"deploymentMode": "Standard", "gateway": {"disableIngressCreation": True}}}}
    # The ClusterServingRuntimes (kserve-mlserver for MLflow models among them); no LLM configs.
    runtimes = {"kserve": {"servingruntime": {"enabled": True}, "llmisvcConfigs": {"enabled": False}}}
    return [
        HelmRelease("cert-manager", versions.CERT_MANAGER, {"crds": {"enabled": True}}),
        HelmRelease("kserve-crd", versions.KSERVE_CRD, {}),
        HelmRelease("kserve", versions.KSERVE_RESOURCES, resources),
        HelmRelease("kserve-runtime-configs", versions.KSERVE_RUNTIME_CONFIGS, runtimes),
    ]


def kfp_objects(spec: StackSpec) -> list[dict[str, Any]]:
    """Applied after KFP's own manifests (and again after any re-apply of them, which restores the stock Secret):
    KFP's object-store Secret with generated keys. Then: restart the Deployments in `KFP_RESTART`, wait for them,
    and run `kfp_rotate_keys_command()`.

    The Secret is KFP's (its Deployments and Argo's artifact repository read it): it gets the sandbox's keys but
    not its labels, so `down` never deletes it. No NetworkPolicy: KFP 2.17 ships none that admits its own
    namespace, and kind's kindnet enforces every policy, so one that selected `app: ml-pipeline` would cut the
    persistence agent, the scheduled-workflow controller and every run's driver off from the API."""
    s = spec.secrets
    keys = {"accesskey": s.kfp_s3_access_key, "secretkey": s.kfp_s3_secret_key}
    made = secret(spec, KFP, KFP_SECRET, keys, versions.KFP_NAMESPACE)
    del made["metadata"]["labels"]
    return [made]


def kfp_rotate_keys_command(namespace: str = versions.KFP_NAMESPACE) -> list[str]:
    """The `kubectl` command that replaces KFP's SeaweedFS identity with the Secret's keys.

    Run inside KFP's SeaweedFS pod (`kubectl exec`: its NetworkPolicy admits only the S3 port from other pods, and
    the pod's environment already holds the Secret's keys through `envFrom`), after the pod was restarted with the
    replaced Secret. `s3.configure -user U -delete` without keys or actions removes the whole identity (seaweedfs
    weed/shell/command_s3_configure.go), the stock key with it; the identity is then made again with the generated
    keys only (scripts/kfp-rotate-keys.sh)."""
    rotate = script("kfp-rotate-keys.sh", KFP_S3_USER=KFP_S3_USER)
    return ["kubectl", "-n", namespace, "exec", "deploy/seaweedfs", "--", "/bin/sh", "-c", rotate]
