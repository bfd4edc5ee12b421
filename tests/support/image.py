"""The service image built from this checkout, once per test session (fixture `service_image`
in tests/conftest.py): what `make image` needs, and the build itself."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from benchmarks.containers import docker, docker_unavailable_reason, project_image

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["docker"]["base_image"]
# The debootstrapped base `make image` falls back to, named once in the Makefile.
LOCAL_BASE = re.search(
    r"^LOCAL_BASE_IMAGE \?= (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE
).group(1)


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


def unavailable_reason() -> str | None:
    """Why no image can be built here, or None."""
    if reason := docker_unavailable_reason():
        return f"no Docker engine for the image tests ({reason})"
    if not base_image_obtainable():
        return (
            f"no base image: {DEFAULT_BASE} cannot be pulled, {LOCAL_BASE} is absent and "
            "debootstrap (to build it) is not installed"
        )
    return None


def build_image(bentoml_home: Path) -> str:
    """`make image` against `bentoml_home`'s model store; the reference of this build."""
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
    last_line = result.stdout.strip().splitlines()[-1]
    # Tagged <version> and, for this build alone, <version>-<image ID>: the reference printed.
    image_id = docker("image", "inspect", "--format", "{{.Id}}", project_image())
    assert last_line == f"{project_image()}-{image_id.removeprefix('sha256:')[:12]}"
    assert docker("image", "inspect", "--format", "{{.Id}}", last_line) == image_id
    assert (REPO_ROOT / "build" / "image-ref").read_text().strip() == last_line
    return last_line
