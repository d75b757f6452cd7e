"""The kind profile: the whole stack on a kind cluster this sandbox creates, with fake or real GPU nodes.

`profile.py` is `KindProfile`; the bring-up, tools and manifests it shares with the cluster
profile are `sandbox.profiles.kube`.
"""

from sandbox.profiles.kind.profile import KindProfile

__all__ = ["KindProfile"]
