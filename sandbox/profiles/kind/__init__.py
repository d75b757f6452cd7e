"""The kind profile: the whole stack on a kind cluster this sandbox creates, with fake or real GPU nodes.

`profile.py` is `KindProfile`: `sandbox.profiles.kube`'s `KubeProfile` with the `KindCluster` source (the
cluster created and deleted, the image built and loaded) and the `NodePortReach` (kind's host port mappings).
"""

from sandbox.profiles.kind.profile import KindProfile

__all__ = ["KindProfile"]
