"""Markers of one-time set-up already done, so that a warm `up` does not do it again.

A marker is written (0600, in the service's folder) once the set-up has succeeded, and records what
was made: for PostgreSQL's role and databases and the inference log's schema, the names, a hash of
what they were made with (the role's password, the schema's SQL) and the identity of the cluster
they were made in (`Postgres.cluster_identity`: a new `initdb` gives a new one). The set-up is
skipped only when the marker records exactly what would be made now; no marker, another cluster,
another password or schema, or a file that cannot be read, and it runs again (it is idempotent).
What the marker cannot see is a change made by hand behind the sandbox's back (a database dropped
with psql); deleting the marker, or `sandbox down --purge`, makes the next `up` do it all again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from sandbox.files import write_private


def digest(text: str) -> str:
    """What a marker keeps of a secret or of a long text: its SHA-256, never the text."""
    return hashlib.sha256(text.encode()).hexdigest()


def matches(path: Path, wanted: Mapping[str, object]) -> bool:
    """True only when ``path`` records exactly ``wanted``."""
    try:
        return json.loads(path.read_text()) == dict(wanted)
    except (OSError, ValueError):
        return False


def record(path: Path, made: Mapping[str, object]) -> None:
    """Mark ``made`` as done (called after it succeeded)."""
    write_private(path, json.dumps(dict(made), sort_keys=True))


def forget(path: Path) -> None:
    path.unlink(missing_ok=True)
