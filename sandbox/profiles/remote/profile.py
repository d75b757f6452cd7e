"""The remote profile: a platform the sandbox did not start, reached by URLs; credentials from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlparse

from rich.markup import escape

from sandbox import ui
from sandbox.config import RemoteConfig, parse_inference_url
from sandbox.endpoints import Endpoints, InferenceEndpoint
from sandbox.errors import ConfigError, PreflightError
from sandbox.pipelines.runner import LocalPipelineRunner
from sandbox.profiles.base import Check, Profile, ProfileStatus, ServiceState, ServiceStatus, common_checks
from sandbox.profiles.remote.checks import EndpointCheck, MissingVariable, run_checks, variable
from sandbox.profiles.remote.serving import RemoteRuntime
from sandbox.serving.deployments import Deployments

# What the remote profile never offers, and what to configure instead (scenarios that need it are skipped with this).
NEVER = {
    "serving": "it deploys no models; to run scenarios that deploy, use a profile that does (`profile: local`); "
    "models the platform already serves are load-tested by listing them under remote.inference",
    "gpu": "it has no GPU scheduler; GPU placement and quotas run on `profile: local` (fake GPU nodes)",
}
# What each configurable capability needs in the `remote:` section.
NEEDS = {
    "mlflow": "set remote.mlflow.tracking_uri",
    "s3": "set remote.s3.endpoint_url, access_key_env and secret_key_env",
    "kfp": "set remote.mlflow.tracking_uri (pipelines run with kfp.local against the remote MLflow)",
    "postgres": "set remote.monitoring.db_url_env to the variable holding the inference log's database URL",
    "monitoring": "set remote.monitoring.db_url_env to the variable holding the inference log's database URL",
    "inference": "list the models the platform serves under remote.inference (NAME: V1 or V2 URL)",
}


def capabilities(remote: RemoteConfig) -> list[str]:
    """What the configuration offers (the checks say whether it answers)."""
    offered = {
        "mlflow": remote.mlflow is not None,
        "s3": remote.s3 is not None,
        "kfp": remote.mlflow is not None,  # kfp.local here, logging to the remote MLflow
        "postgres": remote.monitoring is not None,
        "monitoring": remote.monitoring is not None,
        "inference": bool(remote.inference),
    }
    return [name for name, yes in offered.items() if yes]


def inference_endpoints(remote: RemoteConfig) -> dict[str, InferenceEndpoint]:
    out = {}
    for name, url in remote.inference.items():
        base, model, protocol = parse_inference_url(url)
        out[name] = InferenceEndpoint(
            name=name,
            url=base,
            v1_predict=f"{base}/v1/models/{model}:predict",
            v2_infer=f"{base}/v2/models/{model}/infer",
            kind="model",
            model_name=model,
            protocol=protocol,
        )
    return out


def build_endpoints(remote: RemoteConfig, environ: Mapping[str, str], *, strict: bool = True) -> Endpoints:
    """The Endpoints of the platform; ``strict`` refuses an unset credential variable (exit 2), else it is empty."""

    def secret(name: str | None, key: str) -> str:
        if name is None:
            return ""
        try:
            return variable(environ, name, key)
        except MissingVariable:
            if strict:
                raise ConfigError(
                    f"the environment variable {name} ({key}) is not set", hint=f"export {name} with the credential"
                ) from None
            return ""

    owned = capabilities(remote)
    mlflow, s3, monitoring = remote.mlflow, remote.s3, remote.monitoring
    monitoring_url = secret(monitoring.db_url_env, "remote.monitoring.db_url_env") if monitoring else ""
    auth = {}
    if mlflow:
        auth = {
            "mlflow_token": secret(mlflow.token_env, "remote.mlflow.token_env") or None,
            "mlflow_username": secret(mlflow.username_env, "remote.mlflow.username_env") or None,
            "mlflow_password": secret(mlflow.password_env, "remote.mlflow.password_env") or None,
        }
    return Endpoints(
        profile="remote",
        mlflow_tracking_uri=mlflow.tracking_uri if mlflow else "",
        **auth,
        s3_endpoint_url=s3.endpoint_url if s3 else "",
        s3_access_key=secret(s3.access_key_env, "remote.s3.access_key_env") if s3 else "",
        s3_secret_key=secret(s3.secret_key_env, "remote.s3.secret_key_env") if s3 else "",
        s3_region=s3.region if s3 else "us-east-1",
        buckets=list(s3.buckets) if s3 else [],
        artifacts_bucket=s3.artifacts_bucket if s3 else "mlflow-artifacts",
        data_bucket=s3.data_bucket if s3 else "data",
        postgres_url=monitoring_url,  # no access to MLflow's own database; the inference log's, if given
        monitoring_db_url=monitoring_url or None,
        capabilities=owned,
        capability_fixes={
            **{name: NEEDS[name] for name in NEEDS if name not in owned},
            **NEVER,
        },
        owned=False,
        inference=inference_endpoints(remote),
        serving_token=secret(remote.serving.token_env, "remote.serving.token_env") or None if remote.serving else None,
    )


class RemoteProfile(Profile):
    name = "remote"
    summary = "a platform the sandbox did not start (MLflow, S3, the inference log, KFP, inference URLs), by URL"

    def __init__(self, config):
        super().__init__(config)
        self.remote: RemoteConfig = config.remote

    # ---------------------------------------------------------------- checks

    def _require_configured(self) -> None:
        if not self.remote.configured:
            raise ConfigError(
                "the remote profile has nothing to point at: the `remote:` section is empty",
                hint="set at least remote.mlflow.tracking_uri (and remote.s3, remote.monitoring, remote.kfp, "
                "remote.inference as the platform has them) in sandbox.yaml; see docs/remote.md",
            )

    def checks(self) -> list[EndpointCheck]:
        """One real request per configured endpoint."""
        self._require_configured()
        return run_checks(self.remote, os.environ)

    def preflight(self) -> list[Check]:
        checks = common_checks(self.config)
        if not self.remote.configured:
            checks.append(Check("remote: section", False, "empty", fix="set remote.mlflow.tracking_uri at least"))
            return checks
        for check in self.checks():
            fix = f"fix {check.key}"
            checks.append(Check(f"{check.name} ({check.url})", check.ok, check.detail, fix=fix))
        return checks

    # ---------------------------------------------------------------- protocol

    def up(self, *, keep: bool = False) -> Endpoints:
        """Deploys nothing: checks every endpoint, says what the platform offers, and changes nothing."""
        results = self.checks()
        for check in results:
            mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
            ui.err.print(
                f" {mark} {escape(check.name)} {escape(check.url)} [dim]· {escape(check.detail)} "
                f"({check.seconds:.1f}s)[/]"
            )
        failed = [check for check in results if not check.ok]
        if failed:
            error = ConfigError if any(check.config_error for check in failed) else PreflightError
            raise error(
                f"{len(failed)} of {len(results)} remote endpoint(s) failed their check; nothing on the platform "
                "was changed",
                hint="fix the setting named on each line below (sandbox.yaml `remote:`, or the variable it names)",
                details="\n".join(check.line for check in failed),
            )
        endpoints = self.endpoints()
        offered = ", ".join(endpoints.capabilities)
        ui.err.print(f"\nThe remote platform offers: [bold]{offered}[/]")
        missing = {name: fix for name, fix in endpoints.capability_fixes.items() if name not in endpoints.capabilities}
        for name, fix in missing.items():
            ui.err.print(f"  not offered: {name} ({escape(fix)})")
        ui.err.print("Nothing was deployed or started: the remote profile only points at the platform.")
        return endpoints

    def down(self, *, purge: bool = False, keep_cluster: bool = False) -> None:
        if keep_cluster:
            raise ConfigError(
                f"--keep-cluster applies to a profile that creates a cluster, not to {self.name}",
                hint="drop --keep-cluster",
            )
        extra = " and deletes nothing (--purge has nothing of its own to delete)" if purge else ""
        ui.err.print(
            f"The remote profile stops nothing{extra}: the platform runs on its own. Nothing changed."
            if self.remote.configured
            else "The remote profile has nothing configured; nothing to stop."
        )

    def status(self) -> ProfileStatus:
        result = ProfileStatus(profile=self.name, dir=str(self.config.root))
        if not self.remote.configured:
            return result
        result.services = [_service_status(check) for check in self.checks()]
        result.endpoints = build_endpoints(self.remote, os.environ, strict=False)
        runtime = RemoteRuntime(result.endpoints.inference, result.services, token=result.endpoints.serving_token)
        result.deployments = Deployments(runtime).statuses()
        return result

    def endpoints(self) -> Endpoints:
        self._require_configured()
        return build_endpoints(self.remote, os.environ)

    def _serving_token(self) -> str | None:
        """The listed endpoints' bearer token (`remote.serving.token_env`), if configured and set."""
        serving = self.remote.serving
        return (os.environ.get(serving.token_env) or None) if serving else None

    def serving(self) -> Deployments:
        """Read-only: the listed inference endpoints; deploying is refused with what to configure instead."""
        return Deployments(RemoteRuntime(inference_endpoints(self.remote), token=self._serving_token()))

    def pipelines(self) -> LocalPipelineRunner:
        """kfp.local here, its steps logging to the platform's MLflow and reading its S3.

        Nothing is written to the sandbox dir: each run works in a temporary folder, deleted when the
        run succeeds and kept for its log when it fails.
        """
        if self.remote.mlflow is None:
            raise ConfigError("the remote profile runs no pipelines without an MLflow", hint=NEEDS["kfp"])
        return LocalPipelineRunner(self.endpoints(), root=None)

    def scheduler(self):
        raise ConfigError(
            "the remote profile has no GPU scheduler",
            hint="GPU placement and quotas run on the local profile (`--profile local`, fake GPU nodes)",
        )

    def service_names(self) -> list[str]:
        return []

    def logs(self, service: str, *, lines: int = 50, follow: bool = False):
        raise ConfigError(
            "the remote profile keeps no logs of the platform's services",
            hint="read them where the platform runs (its own logging); `sandbox status --profile remote` checks it",
        )


def _service_status(check: EndpointCheck) -> ServiceStatus:
    parsed = urlparse(check.url)
    return ServiceStatus(
        name=check.name,
        title=check.name,
        state=ServiceState.RUNNING if check.ok else ServiceState.UNHEALTHY,
        instance=None,
        port=parsed.port if parsed.scheme in ("http", "https") else None,
        url=check.url,
        detail=check.line if not check.ok else check.detail,
    )
