"""KServe's serving parts without its package `__init__`, for the model server process.

`import kserve.model` first runs `kserve/__init__.py`, which imports all of KServe: its Kubernetes client
(`kubernetes`, `google.auth`, `jsonschema` with a grammar it compiles on import), a hundred generated API models,
its own model server. The model server uses a few modules (`kserve.model`, `kserve.protocol.*`, `kserve.errors`)
and none of that: skipping the `__init__` saves about 55 MiB of every model server's memory and 2 s of its start.

`skip_package_init()` registers `kserve` as an empty package on KServe's own path, so `import kserve.X` loads X
and what X imports, nothing more. Only the model server's process entry calls it (`python -m
sandbox.serving.model_server`): in a process that also wants `from kserve import InferenceRESTClient` (the
tests), the names `kserve/__init__.py` defines would be missing.
"""

from __future__ import annotations

import importlib.util
import sys


def skip_package_init() -> bool:
    """Register `kserve` as a bare package, unless it is imported already; True when it did."""
    if "kserve" in sys.modules:
        return False
    spec = importlib.util.find_spec("kserve")
    if spec is None or spec.submodule_search_locations is None:
        return False  # not installed: the import that needs it says so
    sys.modules["kserve"] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    return True
