"""The stack's Kubernetes objects, Helm releases and kind cluster config, one module per component, all built from
one `StackSpec` (`spec.py`); nothing here talks to a cluster.

- `spec.py`: the spec, its generated secrets, names and ports, and the object helpers every module uses;
- `namespace.py`, `credentials.py`, `postgres.py`, `s3.py`, `mlflow.py`, `jupyterlab.py`: the stack's components;
- `operators.py`: cert-manager and KServe's Helm releases, Kubeflow Pipelines' object-store keys;
- `gpu.py`: this machine's real GPUs in kind nodes (nvkind's way), and GPU tolerations;
- `kind.py`: kind's cluster config, its NodePorts and host port mappings;
- `serving.py`: a model deployment's objects (InferenceService, A/B router, KServe's S3 account);
- `bundle.py`: the one list of what `up` applies, in plan order, and `render` (`up --render`);
- `scripts/`: the programs the objects and commands run (shell scripts checked by shellcheck in `make lint`).

Every object carries `spec.labels(spec, component)` (`app.kubernetes.io/managed-by: ml-sandbox` and the
instance id), so the `cluster` profile can delete exactly what it made.
"""
