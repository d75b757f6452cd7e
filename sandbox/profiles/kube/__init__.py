"""What the `kind` and `cluster` profiles share: `KubeProfile` and its two strategies, the stack's objects, the
pinned versions, offline validation and `--render`, the command runner and the bring-up actions.

`profile.py` is `KubeProfile`, made of a source (`source.py`: where the cluster comes from) and a reach
(`reach.py`: how the host reaches it). `manifests/` builds the objects, Helm releases and kind's cluster config
from a `StackSpec`, one module per component, and lists what `up` applies (`manifests/bundle.py`), which
`actions.py` turns into the plan, `validate.py` checks offline (core kinds with kubernetes-validate for the
pinned minor, KServe's with its SDK, the kind config against kind's documented fields) and `--render` writes.
`versions.py` holds every pin (each with where it was checked). `serving.py`, `pipelines.py` and `scheduler.py`
are the profiles' backends on KServe, KFP and the Kubernetes scheduler.
"""
