"""The cluster profile: the stack installed into an existing cluster, on a context the user names.

`profile.py` is `ClusterProfile`: `sandbox.profiles.kube`'s `KubeProfile` with the `GivenCluster` source (the
context allow-listed, the operators' CRDs checked, the image pulled) and the `PortForwardReach`.
"""

from sandbox.profiles.cluster.profile import ClusterProfile

__all__ = ["ClusterProfile"]
