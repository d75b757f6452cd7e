"""The long-running processes import what they use: a module they import by accident stays resident in every
copy of them (issue #26 measured the supervisor at 125 MiB with numpy and scipy in it, from the drift check's
defaults; each model server carried KServe's Kubernetes client, 56 MiB). Each check runs the real entry in a
fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

# Data science and cluster libraries: none has any use in the supervisor. psycopg (the inference log's shipper)
# is allowed.
NOT_IN_THE_SUPERVISOR = (
    "numpy",
    "scipy",
    "pandas",
    "sklearn",
    "pyarrow",
    "mlflow",
    "kfp",
    "kubernetes",
    "kserve",
    "torch",
    "sqlalchemy",
    "boto3",
)


def _imported(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


def test_the_supervisor_imports_no_data_science_or_cluster_library():
    code = (
        "import sys\n"
        "import sandbox.profiles.local.supervisor.daemon\n"
        f"print(*sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_IN_THE_SUPERVISOR!r})))\n"
    )
    assert _imported(code) == set()


def test_the_profiles_package_loads_a_profile_on_first_use():
    """`sandbox.profiles` is imported before any of its subpackages; the registry is built when asked for."""
    code = (
        "import sys\n"
        "import sandbox.profiles as p\n"
        "before = 'sandbox.profiles.kube.profile' in sys.modules\n"
        "names = sorted(p.PROFILES)\n"
        "print('before' if before else 'lazy', *names)\n"
    )
    assert _imported(code) == {"lazy", "local", "kind", "cluster", "remote"}


def test_the_model_server_entry_skips_kserves_kubernetes_client(tmp_path):
    """The real entry, `python -m sandbox.serving.model_server`, on a model that is not there: it imports everything
    it serves with (KServe's model, MLflow) and then fails to load; `-X importtime` lists what it imported."""
    missing = tmp_path / "no-model"
    args = ["--name", "m", "--model-uri", str(missing), "--port", "1", "--no-inference-log"]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sandbox.serving.model_server", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "No such artifact: 'no-model'" in result.stderr  # it got as far as loading
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time")}
    assert {"kserve.model", "kserve.protocol.infer_type", "mlflow"} <= imported
    assert not {"kubernetes", "kserve.api.kserve_client", "google.auth", "kserve.models"} & imported


def test_kserve_imported_normally_elsewhere_keeps_its_names():
    """Only the entry skips KServe's `__init__`: importing the serving modules in a process (the tests) does not."""
    code = (
        "import sandbox.serving.model_server, sandbox.serving.mlflow_model, kserve\n"
        "print(kserve.InferenceRESTClient.__name__)"
    )
    assert _imported(code) == {"InferenceRESTClient"}
