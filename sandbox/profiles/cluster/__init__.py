"""The cluster profile: the stack installed into an existing cluster, on a context the user names.

`profile.py` is `ClusterProfile`; what it shares with the kind profile is `sandbox.profiles.kube`.
"""

from sandbox.profiles.cluster.profile import ClusterProfile

__all__ = ["ClusterProfile"]
