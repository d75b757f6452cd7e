from pathlib import Path

import pytest

from sandbox.config import load_config
from sandbox.errors import ConfigError, NotRunningError, PreflightError
from sandbox.profiles import PROFILES, get_profile
from sandbox.profiles.local.services import postgres as pg


def test_registry_selects_the_profile():
    assert set(PROFILES) >= {"local", "kind"}
    assert get_profile(load_config(profile="local")).name == "local"


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        get_profile(load_config(profile="minikube"))
    assert "minikube" in info.value.message
    assert "local" in info.value.hint and "kind" in info.value.hint


def test_configured_bin_dir_without_postgres(tmp_path):
    with pytest.raises(PreflightError) as info:
        pg.find_binaries("auto", tmp_path)
    assert str(tmp_path) in info.value.message
    assert "pg_config --bindir" in info.value.hint


def test_no_postgres_anywhere_names_the_install(monkeypatch):
    monkeypatch.setattr(pg, "_system_bin_dirs", lambda: [])
    monkeypatch.setattr(pg, "_bundled_bin_dir", lambda: None)
    with pytest.raises(PreflightError) as info:
        pg.find_binaries("auto", None)
    assert "apt-get install postgresql" in info.value.hint
    assert "pgserver" in info.value.hint


def test_system_only_does_not_fall_back_to_bundled(monkeypatch):
    bundled = Path(pg.__file__)  # any path: must not be consulted
    monkeypatch.setattr(pg, "_system_bin_dirs", lambda: [])
    monkeypatch.setattr(pg, "_bundled_bin_dir", lambda: bundled)
    with pytest.raises(PreflightError):
        pg.find_binaries("system", None)


def test_local_preflight_reports_each_requirement():
    checks = {c.name: c for c in get_profile(load_config()).preflight()}
    assert {"Python", "Free disk", "PostgreSQL server", "SeaweedFS (weed)"} <= set(checks)
    assert checks["Python"].ok


def test_local_preflight_flags_a_taken_port():
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        checks = get_profile(load_config(**{"mlflow.port": port})).preflight()
    taken = [c for c in checks if c.name == f"Port {port} (mlflow.port)"]
    assert taken and not taken[0].ok and "mlflow.port" in taken[0].fix


def test_kind_preflight_checks_its_tools(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    checks = {c.name: c for c in get_profile(load_config(profile="kind")).preflight()}
    for tool in ("docker", "kind", "kubectl", "helm"):
        assert not checks[tool].ok
        assert "install" in checks[tool].fix


def test_kind_backends_need_a_running_stack():
    kind = get_profile(load_config(profile="kind"))
    # Built (tests/unit/test_kube_serving.py, test_kube_pipelines.py, test_kube_scheduler.py): each needs the stack.
    for backend in (kind.serving, kind.pipelines, kind.scheduler):
        with pytest.raises(NotRunningError, match="no kind sandbox"):
            backend()


def test_traversable_by(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    assert not pg._traversable_by(closed / "data", uid=65534, gid=65534)
    assert pg._traversable_by(Path("/usr/lib/not-created-yet/data"), uid=65534, gid=65534)
