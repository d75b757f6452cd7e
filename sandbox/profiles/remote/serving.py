"""The remote profile's serving runtime: read-only. It lists the endpoints the config names and deploys nothing."""

from __future__ import annotations

from collections.abc import Collection

from sandbox.endpoints import InferenceEndpoint
from sandbox.errors import ConfigError
from sandbox.profiles.locking import unlocked
from sandbox.serving.runtime import Address, Observed
from sandbox.serving.specs import SANDBOX_RUNTIME, DeploymentSpec

NO_DEPLOY_HINT = (
    "deploy on the platform itself and list the model's URL under remote.inference (NAME: its V1 or V2 URL), "
    "or deploy on a profile the sandbox runs (`--profile local`)"
)


class RemoteRuntime:
    """`ServingRuntime` of the remote profile: each listed endpoint is a record with no model URI (the sandbox
    does not know what the platform serves there); every change is refused with `NO_DEPLOY_HINT`."""

    profile = "remote"
    model_runtimes = (SANDBOX_RUNTIME,)  # what `--runtime` it accepts before refusing: the same message as local
    reserved_names: frozenset[str] = frozenset()
    read_only = NO_DEPLOY_HINT
    lock = staticmethod(unlocked)

    def __init__(self, endpoints: dict[str, InferenceEndpoint], services=None, *, token: str | None = None):
        self._endpoints = endpoints
        self._token = token  # the endpoints' bearer token (`remote.serving.token_env`), for readiness
        self._services = {s.name: s for s in services or []}  # checks already made (status), by name

    def tracking_uri(self) -> str:
        raise ConfigError("the remote profile deploys nothing", hint=NO_DEPLOY_HINT)

    def records(self) -> dict[str, DeploymentSpec]:
        return {name: DeploymentSpec(name=name, kind="model") for name in self._endpoints}

    def start(self, records: list[DeploymentSpec], *, replacing: Collection[str] = ()) -> list[str]:
        raise ConfigError("the remote profile deploys nothing", hint=NO_DEPLOY_HINT)

    def stop(self, names: list[str]) -> None:
        raise ConfigError("the remote profile undeploys nothing", hint=NO_DEPLOY_HINT)

    def observe(self, records: list[DeploymentSpec]) -> dict[str, Observed]:
        from sandbox.profiles.remote.checks import check_inference

        out = {}
        for record in records:
            endpoint = self._endpoints[record.name]
            service = self._services.get(f"inference {record.name}")
            if service is not None:
                ok, detail = service.state.value == "running", service.detail
            else:
                url = endpoint.v2_infer if endpoint.protocol == "v2" else endpoint.v1_predict
                check = check_inference(record.name, url, token=self._token)
                ok, detail = check.ok, check.detail
            out[record.name] = Observed("running" if ok else "unhealthy", why=f"listed in remote.inference; {detail}")
        return out

    def address(self, record: DeploymentSpec, *, reach: bool) -> Address | None:
        endpoint = self._endpoints.get(record.name)
        if endpoint is None:
            return None
        return Address(url=endpoint.url, grpc=endpoint.grpc, model_name=endpoint.model_name, protocol=endpoint.protocol)
