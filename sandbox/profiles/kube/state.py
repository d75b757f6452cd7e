"""What a Kubernetes sandbox keeps between commands: `<dir>/kube/state.json` (`KubeState`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sandbox.files import write_private


@dataclasses.dataclass
class KubeState:
    instance: str
    context: str
    namespace: str
    # Every 127.0.0.1 port the sandbox keeps (the reach strategy's, `kube/reach.py`): the stack's services and
    # KFP's API by name (`mlflow`, `kfp`, ...), each deployment's forwards by forward name (`serve-NAME[-grpc]`).
    host_ports: dict[str, int]
    cluster: str | None = None  # the kind cluster this sandbox created
    image: str | None = None  # the project's image `up` built or named: what later deploys and runs use


class StateFile:
    """`state.json` in a profile's folder: written whole (0600), read back or None when absent or unreadable."""

    def __init__(self, folder: Path):
        self.path = folder / "state.json"

    def read(self) -> KubeState | None:
        try:
            return KubeState(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, state: KubeState) -> None:
        write_private(self.path, json.dumps(dataclasses.asdict(state), indent=1))

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)
