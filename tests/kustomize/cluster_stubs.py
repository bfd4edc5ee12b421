"""Stand-ins for kind, kubectl, docker and curl, to run the Makefile's kind targets without a cluster.

Each stub is a small executable put first on PATH. It appends its arguments to a call log and
answers from a JSON state file that the test sets up, so a test can say "the second image has
another ID" or "kind load docker-image fails" and then read what the Makefile did about it.
`kubectl apply -k DIR` renders DIR with the real kustomize and keeps the Deployment it would
have applied, which is what decides whether Kubernetes rolls the pods. The nodes hold the images
`kind load` put there (docker-image, or an archive `docker save` wrote), and `kubectl rollout
status` fails as a cluster would when the pods' image is not among them (`imagePullPolicy:
Never`: ErrImageNeverPull).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The stubs import this module too: nothing heavier than the standard library and PyYAML here.
REPO_ROOT = Path(__file__).resolve().parents[2]
# What the Makefile's kind targets read from the repository.
MAKEFILE_INPUTS = ("Makefile", "pyproject.toml", "kustomize", "cluster")

_STUB = """\
#!{python}
import sys
sys.path.insert(0, {tests_dir!r})
from cluster_stubs import stub_main
sys.exit(stub_main({tool!r}, sys.argv[1:]))
"""


@dataclass
class Call:
    tool: str
    args: list[str]

    def __str__(self) -> str:
        return " ".join([self.tool, *self.args])


class StubCluster:
    """A directory of stub executables and the state they share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.state_path = root / "state.json"
        self.log_path = root / "calls.jsonl"
        from tests.support import manifests

        render = manifests.kustomize_command()
        if render is None:
            raise RuntimeError("the kubectl stub renders with kustomize or kubectl")
        self.state: dict[str, Any] = {
            "clusters": [],
            "nodes_ready": True,
            "client_minor": "36",
            "server_minor": "37",
            "image_id": "sha256:" + "1" * 64,
            "kind_get_clusters_error": "",
            "kind_load_docker_image_fails": False,
            # Whether this docker's `save` has --platform (Docker 28 and newer), and its engine.
            "docker_save_platform": True,
            "docker_platform": "linux/arm64",
            "node_images": [],
            "deployed_image": "",
            "applied": [],
            "render": [shutil.which(render[0]), *render[1:]],
        }
        self.save()
        for tool in ("kind", "kubectl", "docker", "curl"):
            stub = self.bin / tool
            stub.write_text(
                _STUB.format(python=sys.executable, tests_dir=str(Path(__file__).parent), tool=tool)
            )
            stub.chmod(0o755)

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))

    def load(self) -> dict[str, Any]:
        self.state = json.loads(self.state_path.read_text())
        return self.state

    def set(self, **values: Any) -> None:
        self.load()
        self.state.update(values)
        self.save()

    def calls(self, tool: str | None = None) -> list[Call]:
        if not self.log_path.exists():
            return []
        calls = [Call(**json.loads(line)) for line in self.log_path.read_text().splitlines()]
        return [call for call in calls if tool is None or call.tool == tool]

    def forget_calls(self) -> None:
        self.log_path.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "STUB_STATE": str(self.state_path),
            "STUB_LOG": str(self.log_path),
        }


def copy_makefile_tree(destination: Path) -> Path:
    """A copy of what the kind targets read, so a test can change it and write build/ freely."""
    destination.mkdir(parents=True)
    for name in MAKEFILE_INPUTS:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    return destination


# A sub-make's level and flags (under `make test`, messages would read `make[1]:`), and the
# Makefile's own variable a user may have exported.
_NOT_INHERITED = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "KIND_HOST_PORT")


def run_make(
    tree: Path, stubs: StubCluster, *targets: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """make as a person types it in `tree`, with the stubs first on PATH."""
    env = {key: value for key, value in stubs.env().items() if key not in _NOT_INHERITED}
    return subprocess.run(
        ["make", "--no-print-directory", *targets],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- inside the stubs ---------------------------------------------------------------------------


def stub_main(tool: str, args: list[str]) -> int:
    state_path = Path(os.environ["STUB_STATE"])
    with Path(os.environ["STUB_LOG"]).open("a") as log:
        log.write(json.dumps({"tool": tool, "args": args}) + "\n")
    state = json.loads(state_path.read_text())
    code = {"kind": _kind, "kubectl": _kubectl, "docker": _docker, "curl": _curl}[tool](state, args)
    state_path.write_text(json.dumps(state))
    return code


def _kind(state: dict[str, Any], args: list[str]) -> int:
    if args[:2] == ["get", "clusters"]:
        if state["kind_get_clusters_error"]:
            print(state["kind_get_clusters_error"], file=sys.stderr)
            return 1
        print("\n".join(state["clusters"]))
    elif args[:2] == ["create", "cluster"]:
        state["clusters"].append(args[args.index("--name") + 1])
    elif args[:2] == ["load", "docker-image"]:
        if state["kind_load_docker_image_fails"]:
            print(
                "ERROR: failed to load image: command failed with error: exit status 1",
                file=sys.stderr,
            )
            print("Command Output: ctr: content digest sha256:0: not found", file=sys.stderr)
            return 1
        state["node_images"] += args[2 : args.index("--name")]
    elif args[:2] == ["load", "image-archive"]:
        if not Path(args[2]).is_file():
            print(f"ERROR: no archive at {args[2]}", file=sys.stderr)
            return 1
        state["node_images"] += json.loads(Path(args[2]).read_text())
    return 0


def _kubectl(state: dict[str, Any], args: list[str]) -> int:
    if "version" in args:
        versions = {"clientVersion": {"major": "1", "minor": state["client_minor"]}}
        if "--client" not in args:
            versions["serverVersion"] = {"major": "1", "minor": state["server_minor"]}
        print(json.dumps(versions, indent=2))
    elif "wait" in args:
        return 0 if state["nodes_ready"] else 1
    elif "rollout" in args:
        if state["deployed_image"] not in state["node_images"]:
            print(
                f'pod iris-classifier-0: ErrImageNeverPull: image "{state["deployed_image"]}" '
                "is not present with pull policy of Never",
                file=sys.stderr,
            )
            return 1
    elif "get" in args:
        print(state["deployed_image"], end="")
    elif "apply" in args:
        directory = args[args.index("-k") + 1]
        rendered = subprocess.run(
            [*state["render"], directory], capture_output=True, text=True, check=False
        )
        if rendered.returncode != 0:
            print(rendered.stderr, file=sys.stderr)
            return 1
        import yaml

        (deployment,) = [
            doc for doc in yaml.safe_load_all(rendered.stdout) if doc["kind"] == "Deployment"
        ]
        template = deployment["spec"]["template"]
        state["applied"].append(template)
        state["deployed_image"] = template["spec"]["containers"][0]["image"]
    return 0


def _docker(state: dict[str, Any], args: list[str]) -> int:
    if args[:2] == ["image", "inspect"]:
        print(state["image_id"])
    elif args[:2] == ["save", "--help"]:
        print("Usage:  docker save [OPTIONS] IMAGE [IMAGE...]\n\nOptions:")
        print("  -o, --output string   Write to a file, instead of STDOUT")
        if state["docker_save_platform"]:
            print("      --platform list   Save only the given platform(s)")
    elif args[:1] == ["save"]:
        if "--platform" in args and not state["docker_save_platform"]:
            print("unknown flag: --platform", file=sys.stderr)
            return 125
        output = args.index("--output")
        # The images the archive holds: everything after the options.
        images = [arg for arg in args[output + 2 :] if not arg.startswith("--")]
        Path(args[output + 1]).write_text(json.dumps(images))
    elif args[:1] == ["version"]:
        print(state["docker_platform"])
    return 0


def _curl(state: dict[str, Any], args: list[str]) -> int:
    print('"Iris classifier is ready!"', end="")
    return 0
