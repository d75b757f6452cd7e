"""The `pipelines:` section of sandbox.yaml: what the pipelines' components run on.

On a KFP cluster each component runs in a container of ``base_image``; the
components import only what that image has (mlflow, scikit-learn, skops,
pandas, pyarrow, boto3 and KFP's own SDK), never the `sandbox` package. The
default is the project's own image, which has them all. A stock Python image
works too, with ``packages_to_install`` (``COMPONENT_PACKAGES`` pins what this
environment has); KFP then installs them, and its SDK, when each step starts.

``kfp.local``'s subprocess runner ignores the image: its components run with
this Python, so it builds its pipelines for ``LOCAL`` (no installs).
"""

from __future__ import annotations

import sys
from importlib import metadata

from pydantic import BaseModel, ConfigDict, Field

PROJECT = "ml-platform-sandbox"
IMAGE_REPO = "ml-sandbox"
"""The project's image's name (the repository's Dockerfile), tagged with the package's version."""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


PROJECT_IMAGE = f"{IMAGE_REPO}:{_version(PROJECT) or 'latest'}"
"""The project's image (its name and version): what a cluster profile builds and loads for pipelines and serving."""

COMPONENT_DISTRIBUTIONS = ("mlflow", "scikit-learn", "skops", "pandas", "pyarrow", "boto3")
"""What the components import; the project's image has them."""

COMPONENT_PACKAGES = [f"{name}=={version}" if (version := _version(name)) else name for name in COMPONENT_DISTRIBUTIONS]
"""``packages_to_install`` for a stock Python image: the components' imports at this environment's versions."""


class PipelinesConfig(BaseModel):
    """What the pipelines' components run on (a cluster's runner; kfp.local runs them with this Python)."""

    model_config = ConfigDict(extra="forbid")

    base_image: str = Field(
        PROJECT_IMAGE,
        min_length=1,
        description="container image of every component: the project's image, or one with the components' packages",
    )
    packages_to_install: list[str] = Field(
        default_factory=list,
        description="pip requirements installed when a step starts, for an image that lacks them "
        "(e.g. python:3.11 with sandbox.pipelines.config.COMPONENT_PACKAGES); KFP's SDK is then installed too",
    )

    def component_options(self) -> dict:
        """Keyword arguments of `kfp.dsl.component` for this image."""
        return {
            "base_image": self.base_image,
            "packages_to_install": list(self.packages_to_install) or None,
            # The project's image has KFP's SDK; a stock image gets it installed with the packages.
            "install_kfp_package": bool(self.packages_to_install),
        }


LOCAL = PipelinesConfig(base_image=f"python:{sys.version_info.major}.{sys.version_info.minor}")
"""What kfp.local's subprocess runner needs: nothing installed (this Python has it all); a Python image's name."""
