"""The remote profile's serving backend: read-only. It lists the endpoints the config names and deploys nothing."""

from __future__ import annotations

from sandbox.endpoints import InferenceEndpoint
from sandbox.errors import ConfigError

_NO_DEPLOY_HINT = (
    "deploy on the platform itself and list the model's URL under remote.inference (NAME: its V1 or V2 URL), "
    "or deploy on a profile the sandbox runs (`--profile local`)"
)


class RemoteServing:
    """``inference_endpoints``, ``records`` and ``statuses`` of the listed endpoints; deploying is refused."""

    def __init__(self, endpoints: dict[str, InferenceEndpoint], services=None):
        self._endpoints = endpoints
        self._services = {s.name: s for s in services or []}  # checks already made (status), by name

    def inference_endpoints(self) -> dict[str, InferenceEndpoint]:
        return dict(self._endpoints)

    def get(self, name: str) -> None:
        return None  # the sandbox deployed nothing here: listed endpoints are the platform's own

    def statuses(self) -> list:
        from sandbox.profiles.remote.checks import check_inference
        from sandbox.serving.specs import DeploymentStatus

        out = []
        for name, endpoint in self._endpoints.items():
            url = endpoint.v2_infer if endpoint.protocol == "v2" else endpoint.v1_predict
            service = self._services.get(f"inference {name}")
            if service is not None:
                ok, detail = service.state.value == "running", service.detail
            else:
                check = check_inference(name, url)
                ok, detail = check.ok, check.detail
            out.append(
                DeploymentStatus(
                    name=name,
                    kind="model",
                    state="running" if ok else "unhealthy",
                    instance=None,
                    url=url,
                    model_uri=None,
                    detail=f"listed in remote.inference; {detail}",
                )
            )
        return out

    def _refuse(self, what: str, name: str):
        raise ConfigError(f"the remote profile cannot {what} {name!r}: it deploys nothing", hint=_NO_DEPLOY_HINT)

    def deploy(self, name: str, *args, **kwargs):
        from sandbox.serving.specs import SANDBOX_RUNTIME, validate_runtime

        validate_runtime(kwargs.get("runtime", SANDBOX_RUNTIME), profile="remote")
        self._refuse("deploy", name)

    def split(self, name: str, *args, **kwargs):
        self._refuse("deploy the split", name)

    def undeploy(self, name: str):
        self._refuse("undeploy", name)
