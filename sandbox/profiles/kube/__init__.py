"""What the `kind` and `cluster` profiles share: the stack's Kubernetes objects, the pinned versions,
offline validation and `--render`, the command runner and the bring-up actions.

`versions` holds every pin (each with where it was checked), `manifests` builds the objects,
Helm releases and the kind cluster config from a `StackSpec`, `validate` checks them offline
(core kinds with kubernetes-validate for the pinned minor, the kind config against kind's
documented fields) without a cluster.
"""
