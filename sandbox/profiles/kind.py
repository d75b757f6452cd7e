"""The kind profile: the same stack on a kind Kubernetes cluster.

So far only its preflight exists (`sandbox doctor --profile kind`); bring-up is
planned work and says so plainly instead of pretending.
"""

from __future__ import annotations

import shutil
import subprocess

from sandbox.endpoints import Endpoints
from sandbox.errors import PreflightError
from sandbox.profiles.base import Check, Profile, ProfileStatus, common_checks

_TOOLS = {
    "docker": "install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/",
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/",
    "helm": "install Helm: https://helm.sh/docs/intro/install/",
}


def _not_available() -> PreflightError:
    return PreflightError(
        "the kind profile can be checked (`sandbox doctor --profile kind`) but not brought up yet",
        hint="use the default local profile: `sandbox up --profile local`",
    )


class KindProfile(Profile):
    name = "kind"
    summary = "a kind Kubernetes cluster with fake or real GPU nodes (preflight only so far)"

    def preflight(self) -> list[Check]:
        checks = common_checks(self.config)
        for tool, fix in _TOOLS.items():
            path = shutil.which(tool)
            checks.append(Check(tool, path is not None, path or "not found on PATH", fix=fix))
        if shutil.which("docker"):
            info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
            running = info.returncode == 0 and bool(info.stdout.strip())
            checks.append(
                Check(
                    "Docker daemon",
                    running,
                    f"server {info.stdout.strip()}" if running else "not reachable",
                    fix="start the Docker daemon (e.g. `systemctl start docker`) and check `docker info`",
                )
            )
        return checks

    def up(self, *, keep: bool = False) -> Endpoints:
        raise _not_available()

    def down(self, *, purge: bool = False) -> None:
        raise _not_available()

    def status(self) -> ProfileStatus:
        return ProfileStatus(profile=self.name, dir=str(self.config.root))

    def endpoints(self) -> Endpoints:
        raise _not_available()

    def serving(self):
        raise _not_available()

    def pipelines(self):
        raise PreflightError(
            "the kind profile has no pipeline runner yet: submitting pipelines to KFP standalone with "
            "`kfp.Client` is planned work (issue 10, typed backends)",
            hint="run pipelines on the local profile (`--profile local`, kfp.local), or compile them for the "
            "cluster's image (`pipelines.base_image`) with sandbox.pipelines.training.compile_spec",
        )

    def scheduler(self):
        raise _not_available()

    def service_names(self) -> list[str]:
        return []

    def logs(self, service: str, *, lines: int = 50, follow: bool = False):
        raise _not_available()
