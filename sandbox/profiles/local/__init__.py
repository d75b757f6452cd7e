"""The local profile, all in one place: real services as processes on 127.0.0.1, no Docker.

`profile.LocalProfile` is the only name the rest of the sandbox may use, and only
the profile registry (`sandbox.profiles`) imports it; everything else here is
internal (an import-linter contract in pyproject.toml holds that):

- `services/`: PostgreSQL, SeaweedFS (S3) and the MLflow server, one module each.
- `process.py`: `ManagedProcess`, a server process and its group behind a verified pid file.
- `readiness.py`: `wait_ready`, polling a real probe while watching the process.
- `state.py`: the sandbox dir (`SandboxDir`), `secrets.json`, `ports.json` (`PortMap`),
  the lock (`sandbox.profiles.locking` on `<dir>/sandbox.lock`), and `make_private`.
- `serving.py`: `LocalProcessRuntime`, the serving runtime: model servers and A/B routers as processes
  (`deployments.json`); what to run is `sandbox.serving.deployments`'s decision.
- `scheduler.py`: `LocalScheduler`, the GPU cluster model with its state in the sandbox dir.
- `supervisor/`: the process that restarts what crashed (policy, loop, components, handle, daemon).
- `plan.py`: what `up --dry-run` prints, built from the same actions `up` runs, writing nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.profiles.local.profile import LocalProfile


def __getattr__(name: str):
    # On first use, not with the package: the supervisor (`python -m sandbox.profiles.local.supervisor`) lives here
    # and needs the services, not the whole profile (its plan, the pipeline runner, the scheduler).
    if name == "LocalProfile":
        from sandbox.profiles.local.profile import LocalProfile

        return LocalProfile
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LocalProfile"]
