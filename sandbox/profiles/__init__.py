"""The profile registry: the one place a profile name becomes a profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.errors import ConfigError
from sandbox.profiles.base import Check, Profile, ProfileStatus

if TYPE_CHECKING:
    from sandbox.config import SandboxConfig

PROFILES: dict[str, type[Profile]]


def _registry() -> dict[str, type[Profile]]:
    # Imported on first use, not with this package: the processes that live in a profile's subpackage (the local
    # supervisor, `python -m sandbox.profiles.local.supervisor`) import this package first, and would otherwise load
    # every profile, the Kubernetes client and MLflow's with them, into a daemon that needs none of it.
    from sandbox.profiles.cluster import ClusterProfile
    from sandbox.profiles.kind import KindProfile
    from sandbox.profiles.local import LocalProfile
    from sandbox.profiles.remote import RemoteProfile

    return {cls.name: cls for cls in (LocalProfile, KindProfile, ClusterProfile, RemoteProfile)}


def __getattr__(name: str):
    if name == "PROFILES":
        return _profiles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _profiles() -> dict[str, type[Profile]]:
    if "PROFILES" not in globals():
        globals()["PROFILES"] = _registry()
    return globals()["PROFILES"]


def get_profile(config: SandboxConfig) -> Profile:
    profiles = _profiles()
    try:
        cls = profiles[config.profile]
    except KeyError:
        raise ConfigError(
            f"unknown profile '{config.profile}'",
            hint=f"choose one of: {', '.join(profiles)} (--profile, SANDBOX_PROFILE or `profile:` in sandbox.yaml)",
        ) from None
    return cls(config)


__all__ = ["PROFILES", "Check", "Profile", "ProfileStatus", "get_profile"]
