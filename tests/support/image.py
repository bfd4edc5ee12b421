"""The service image built from this checkout, for every test that runs it.

`make image` tags each build `iris-classifier:<version>` and `<version>-<image ID>`, and prints
the latter last. The tag is shared with every other build on the machine and may be retagged at
any time; the content reference names this build alone, so the tests run that one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from harness.containers import docker, docker_unavailable_reason, project_image
from harness.processes import REPO_ROOT

DEFAULT_BASE = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["docker"]["base_image"]
# The debootstrapped base `make image` falls back to, named once in the Makefile.
LOCAL_BASE = re.search(
    r"^LOCAL_BASE_IMAGE \?= (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE
).group(1)
IMAGE_REF_FILE = REPO_ROOT / "build" / "image-ref"


def base_image_obtainable() -> bool:
    """Whether `make image` can get a base: present, buildable with debootstrap, or pullable."""
    for image in (LOCAL_BASE, DEFAULT_BASE):
        with contextlib.suppress(subprocess.CalledProcessError):
            docker("image", "inspect", image)
            return True
    if shutil.which("debootstrap"):
        return True
    try:
        docker("pull", "--quiet", DEFAULT_BASE, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False
    return True


def why_no_image_can_be_built() -> str | None:
    """Why `make image` cannot run here, or None when it can."""
    if reason := docker_unavailable_reason():
        return f"no Docker engine for the image ({reason})"
    if not base_image_obtainable():
        return (
            f"no base image: {DEFAULT_BASE} cannot be pulled, {LOCAL_BASE} is absent and "
            "debootstrap (to build it) is not installed"
        )
    return None


def build_image(bentoml_home: Path) -> str:
    """`make image` with the model store at `bentoml_home`; the content reference it printed.

    Raises AssertionError when the build fails or does not print the reference of the image
    it tagged.
    """
    result = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=REPO_ROOT,
        env={**os.environ, "BENTOML_HOME": str(bentoml_home)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, (
        f"make image failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    reference = result.stdout.strip().splitlines()[-1]
    image_id = docker("image", "inspect", "--format", "{{.Id}}", reference)
    assert reference == f"{project_image()}-{image_id.removeprefix('sha256:')[:12]}", reference
    assert IMAGE_REF_FILE.read_text().strip() == reference
    return reference
