"""What `make image` takes from the build host: the builder and the CA bundle (image/build-host.sh).

The choices run for real, with a stand-in `docker` first on PATH (it answers `docker buildx
version` or not, and records each build with the DOCKER_BUILDKIT it saw) and temporary
directories for the CA bundle's paths. The real build, on this machine's Docker without
buildx, is tests/image/test_image.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

IMAGE_DIR = REPO_ROOT / "image"
BUILDX_VERSION = "github.com/docker/buildx v0.29.1 a1b2c3d"

# Records its arguments, the DOCKER_BUILDKIT it saw and, for a build, the CA bundle in the
# build context; `docker buildx version` answers only when STUB_BUILDX is set.
_DOCKER_STUB = """\
#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["buildx", "version"] and not os.environ.get("STUB_BUILDX"):
    print("docker: 'buildx' is not a docker command.", file=sys.stderr)
    sys.exit(1)
record = {{"tool": Path(sys.argv[0]).name, "args": args, "buildkit": os.environ.get("DOCKER_BUILDKIT")}}
if args[:1] == ["build"]:
    ca = Path(args[-1]) / "build-host-ca.crt"
    record["ca"] = ca.read_text() if ca.exists() else None
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
if args[:2] == ["buildx", "version"]:
    print({buildx!r})
"""


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A directory with a stand-in `docker` and `bentoml` (the same recorder) for PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "bentoml"):
        stub = bin_dir / tool
        stub.write_text(_DOCKER_STUB.format(python=sys.executable, buildx=BUILDX_VERSION))
        stub.chmod(0o755)
    return bin_dir


def run_bash(
    script: str, stub_bin: Path, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`script` in bash with build-host.sh sourced, the stubs first on PATH, and no
    DOCKER_BUILDKIT or builder choice inherited from the environment running the tests."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DOCKER_BUILDKIT", "IRIS_DOCKER_BUILDER", "HOST_CA_BUNDLE")
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'source "{IMAGE_DIR}/build-host.sh"; {script}'],
        env={
            **inherited,
            "PATH": f"{stub_bin}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(tmp_path / "calls.jsonl"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recorded(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- the builder --------------------------------------------------------------------------------

CHOOSE = 'choose_docker_builder; echo "$DOCKER_BUILDKIT $IRIS_DOCKER_BUILDER"'


def test_buildkit_is_chosen_where_docker_buildx_answers(stub_bin: Path, tmp_path: Path) -> None:
    result = run_bash(CHOOSE, stub_bin, tmp_path, {"STUB_BUILDX": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "buildkit"]
    assert result.stderr.splitlines() == ["image build: BuildKit (docker buildx v0.29.1)"]


def test_the_classic_builder_is_chosen_only_without_docker_buildx(
    stub_bin: Path, tmp_path: Path
) -> None:
    result = run_bash(CHOOSE, stub_bin, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "classic"]
    assert result.stderr.splitlines() == [
        "image build: Docker's classic builder (docker buildx is not installed)"
    ]


@pytest.mark.parametrize(
    ("buildkit", "buildx", "expected", "reason"),
    [
        ("0", True, "0", "DOCKER_BUILDKIT=0 is set"),
        ("1", False, "1", "DOCKER_BUILDKIT=1 is set, without docker buildx"),
    ],
)
def test_an_explicit_docker_buildkit_wins(
    stub_bin: Path, tmp_path: Path, buildkit: str, buildx: bool, expected: str, reason: str
) -> None:
    env = {"DOCKER_BUILDKIT": buildkit, **({"STUB_BUILDX": "1"} if buildx else {})}
    result = run_bash(CHOOSE, stub_bin, tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == expected
    assert reason in result.stderr


def test_the_choice_is_said_once_and_passed_on(stub_bin: Path, tmp_path: Path) -> None:
    # containerize.sh chooses; build-env.sh and build-base-image.sh, which it runs, inherit.
    script = f"{CHOOSE}; bash -c 'source \"{IMAGE_DIR}/build-host.sh\"; {CHOOSE}'"
    result = run_bash(script, stub_bin, tmp_path, {"STUB_BUILDX": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "buildkit", "1", "buildkit"]
    assert len(result.stderr.splitlines()) == 1
    assert len([call for call in recorded(tmp_path) if call["args"][:1] == ["buildx"]]) == 1


def test_every_build_of_make_image_uses_the_chosen_builder(stub_bin: Path, tmp_path: Path) -> None:
    """containerize.sh end to end: the build stage's `docker build` and `bentoml containerize`
    both run with the builder chosen once (the stand-in docker has every image already)."""
    for buildx, expected in ((True, "1"), (False, "0")):
        (tmp_path / "calls.jsonl").unlink(missing_ok=True)
        env = {
            "LOCAL_BASE_IMAGE": "iris-python-runtime:3.11-bookworm",
            "BASE_IMAGE": "local",
            "BUILD_ENV_IMAGE": "iris-image-build-env:test",
            "BENTOML": str(stub_bin / "bentoml"),
            **({"STUB_BUILDX": "1"} if buildx else {}),
        }
        script = f'"{IMAGE_DIR}/containerize.sh" iris_classifier:test iris-classifier:test'
        result = run_bash(script, stub_bin, tmp_path, env)
        assert result.returncode == 0, result.stderr
        assert len([line for line in result.stderr.splitlines() if "image build:" in line]) == 1
        builds = [
            call for call in recorded(tmp_path) if call["args"][:1] in (["build"], ["containerize"])
        ]
        assert [call["tool"] for call in builds] == ["docker", "bentoml"]
        assert {call["buildkit"] for call in builds} == {expected}


# --- the CA bundle ------------------------------------------------------------------------------


@pytest.fixture
def ca_paths(tmp_path: Path) -> list[Path]:
    """Stand-ins for the Debian, macOS and Fedora bundle paths, none of them existing yet."""
    root = tmp_path / "host"
    return [
        root / "etc/ssl/certs/ca-certificates.crt",
        root / "etc/ssl/cert.pem",
        root / "etc/pki/tls/certs/ca-bundle.crt",
    ]


def find_bundle(
    stub_bin: Path, tmp_path: Path, candidates: list[Path], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    quoted = " ".join(f'"{path}"' for path in candidates)
    return run_bash(f"find_host_ca_bundle {quoted}", stub_bin, tmp_path, env)


def write_bundle(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{path.name}\n-----END CERTIFICATE-----\n")
    return path


def test_the_default_ca_bundle_paths_are_debians_macos_and_fedoras(
    stub_bin: Path, tmp_path: Path
) -> None:
    result = run_bash('printf "%s\\n" "${HOST_CA_BUNDLE_CANDIDATES[@]}"', stub_bin, tmp_path)
    assert result.stdout.splitlines() == [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/cert.pem",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]


@pytest.mark.parametrize("present", [0, 1, 2])
def test_the_first_ca_bundle_found_is_used(
    stub_bin: Path, tmp_path: Path, ca_paths: list[Path], present: int
) -> None:
    """Each system's path is found when it is the only one; with several, the first wins."""
    write_bundle(ca_paths[present])
    result = find_bundle(stub_bin, tmp_path, ca_paths)
    assert (result.returncode, result.stdout.strip()) == (0, str(ca_paths[present]))
    for later in ca_paths[present + 1 :]:
        write_bundle(later)
    assert find_bundle(stub_bin, tmp_path, ca_paths).stdout.strip() == str(ca_paths[present])


def test_no_ca_bundle_on_the_host_is_not_an_error(
    stub_bin: Path, tmp_path: Path, ca_paths: list[Path]
) -> None:
    ca_paths[0].mkdir(parents=True)  # a directory of that name is no bundle
    result = find_bundle(stub_bin, tmp_path, ca_paths)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_given_ca_bundle_wins_and_must_exist(
    stub_bin: Path, tmp_path: Path, ca_paths: list[Path]
) -> None:
    write_bundle(ca_paths[0])
    given = write_bundle(tmp_path / "corporate-root.pem")
    chosen = find_bundle(stub_bin, tmp_path, ca_paths, {"HOST_CA_BUNDLE": str(given)})
    assert chosen.stdout.strip() == str(given)
    none = find_bundle(stub_bin, tmp_path, ca_paths, {"HOST_CA_BUNDLE": "none"})
    assert (none.returncode, none.stdout) == (0, "")
    missing = tmp_path / "missing.pem"
    refused = find_bundle(stub_bin, tmp_path, ca_paths, {"HOST_CA_BUNDLE": str(missing)})
    assert refused.returncode != 0
    assert f"HOST_CA_BUNDLE={missing} is not a readable file" in refused.stderr


@pytest.mark.parametrize("given", [True, False])
def test_the_build_stage_gets_the_bundle_or_an_empty_placeholder(
    stub_bin: Path, tmp_path: Path, given: bool
) -> None:
    """build-env.sh puts the chosen bundle in the build context; with none, an empty file, which
    the build stage's Dockerfile replaces with the base's own bundle."""
    bundle = write_bundle(tmp_path / "proxy-root.pem")
    env = {"HOST_CA_BUNDLE": str(bundle) if given else "none"}
    result = run_bash(f'"{IMAGE_DIR}/build-env.sh" base:tag build-env:tag', stub_bin, tmp_path, env)
    assert result.returncode == 0, result.stderr
    (build,) = [call for call in recorded(tmp_path) if call["args"][:1] == ["build"]]
    assert build["ca"] == (bundle.read_text() if given else "")
    dockerfile = (IMAGE_DIR / "build-env" / "Dockerfile").read_text()
    assert (
        "[ -s /etc/ssl/build-host-ca.crt ] || cp /etc/ssl/certs/ca-certificates.crt" in dockerfile
    )


# --- uv, installed inside the build stage --------------------------------------------------------


def test_the_build_stage_installs_the_uv_that_pyproject_pins() -> None:
    """The uv that locks the Bento's requirements (pyproject's `image` extra) is the uv that
    installs them in the build stage (image/build-env/uv.txt)."""
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (pin,) = [requirement for requirement in extras["image"] if requirement.startswith("uv==")]
    pinned = (IMAGE_DIR / "build-env" / "uv.txt").read_text().splitlines()
    versions = [line.split()[1] for line in pinned if line.startswith("version ")]
    assert versions == [pin.removeprefix("uv==")]
    machines = {
        line.split()[0] for line in pinned if line and not line.startswith(("#", "version"))
    }
    assert machines == {"x86_64", "aarch64"}, "amd64 and arm64 hosts (Apple silicon) both build"
