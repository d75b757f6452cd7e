"""The profile registry: the one place a profile name becomes a profile."""

from __future__ import annotations

from sandbox.config import SandboxConfig
from sandbox.errors import ConfigError
from sandbox.profiles.base import Check, Profile, ProfileStatus
from sandbox.profiles.cluster import ClusterProfile
from sandbox.profiles.kind import KindProfile
from sandbox.profiles.local import LocalProfile
from sandbox.profiles.remote import RemoteProfile

PROFILES: dict[str, type[Profile]] = {
    cls.name: cls for cls in (LocalProfile, KindProfile, ClusterProfile, RemoteProfile)
}


def get_profile(config: SandboxConfig) -> Profile:
    try:
        cls = PROFILES[config.profile]
    except KeyError:
        raise ConfigError(
            f"unknown profile '{config.profile}'",
            hint=f"choose one of: {', '.join(PROFILES)} (--profile, SANDBOX_PROFILE or `profile:` in sandbox.yaml)",
        ) from None
    return cls(config)


__all__ = ["PROFILES", "Check", "Profile", "ProfileStatus", "get_profile"]
