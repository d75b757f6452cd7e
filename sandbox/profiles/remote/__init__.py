"""The remote profile: the checklist and load tests against a platform the sandbox did not start.

`sandbox.yaml`'s `remote:` section gives its URLs, and the names of the environment
variables that hold its credentials. `up` deploys nothing: it checks each endpoint
with a real request (`checks.py`) and says which capabilities the platform offers;
`down` stops nothing; `status` checks again. The serving backend is read-only
(`serving.py`): the inference endpoints the config lists, for load tests by name.
"""

from sandbox.profiles.remote.profile import RemoteProfile, build_endpoints, capabilities

__all__ = ["RemoteProfile", "build_endpoints", "capabilities"]
