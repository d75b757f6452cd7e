"""`python -m sandbox.cli`, as when the CLI was one module (`python -m sandbox` is the usual way)."""

from sandbox.cli import app

app()
