"""Test against a real sandbox from any project's pytest suite (docs/testing.md).

`pytest --sandbox` (or `-p sandbox.testing`) loads the fixtures in `sandbox.testing.fixtures`:
`ml_sandbox`, `mlflow_client`, `s3_client`, `minio_client`, `sandbox_name`, `reference_model`, `deploy`,
`serving_headers`, `checklist`. Without pytest, `start_sandbox` and `attach_sandbox` give the same `SandboxHandle`.

This package is imported at every pytest start (the `pytest11` entry point is `sandbox.testing.options`),
so it imports nothing itself: the handle's module loads on first use of a name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Registered with this package when pytest loads it as a plugin (`-p sandbox.testing`, or `--sandbox`).
pytest_plugins = ["sandbox.testing.fixtures"]

if TYPE_CHECKING:
    from sandbox.testing.handle import (
        RunNames,
        SandboxHandle,
        SandboxUnavailableError,
        attach_sandbox,
        start_sandbox,
    )

__all__ = ["RunNames", "SandboxHandle", "SandboxUnavailableError", "attach_sandbox", "start_sandbox"]


def __getattr__(name: str):
    if name in __all__:
        from sandbox.testing import handle

        return getattr(handle, name)
    raise AttributeError(f"module 'sandbox.testing' has no attribute {name!r}")
