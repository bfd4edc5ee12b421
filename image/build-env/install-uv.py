"""Install the uv release that uv.txt pins into a directory, from PyPI, checked by its SHA-256.

Runs inside the build stage, on the base's own Python (which may have no pip): it finds the
pinned wheel for this machine in PyPI's simple index (PEP 691 JSON), downloads it, refuses it
unless its SHA-256 is the pinned one, and unpacks the `uv` executable.

Usage: python3 install-uv.py UV_TXT DESTINATION_DIR
Env:   UV_WHEEL_INDEX  simple index to find the wheel in (default https://pypi.org/simple)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

INDEX = os.environ.get("UV_WHEEL_INDEX", "https://pypi.org/simple").rstrip("/")
# platform.machine() spells some machines the way other systems do.
MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def read_pins(path: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    version = ""
    wheels: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "version":
            version = fields[1]
        else:
            machine, filename, sha256 = fields
            wheels[machine] = (filename, sha256)
    if not version or not wheels:
        sys.exit(f"install-uv: {path} names no version or no wheel")
    return version, wheels


def wheel_url(filename: str) -> str:
    index = fetch(f"{INDEX}/uv/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    files = json.loads(index)["files"]
    for entry in files:
        if entry["filename"] == filename:
            return urllib.request.urljoin(f"{INDEX}/uv/", entry["url"])
    sys.exit(f"install-uv: {INDEX}/uv/ lists no {filename}")


def fetch(url: str, headers: dict[str, str] | None = None) -> bytes:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.read()
    except urllib.error.URLError as error:
        sys.exit(
            f"install-uv: cannot download {url}: {error.reason}. Behind a TLS-inspecting "
            "proxy, make image needs its CA bundle: HOST_CA_BUNDLE=/path/to/bundle.pem"
        )


def main(pins_path: str, destination: str) -> None:
    version, wheels = read_pins(Path(pins_path))
    machine = platform.machine().lower()
    machine = MACHINE_ALIASES.get(machine, machine)
    if machine not in wheels:
        sys.exit(f"install-uv: no uv wheel pinned for {machine} (pinned: {', '.join(wheels)})")
    filename, expected = wheels[machine]
    wheel = fetch(wheel_url(filename))
    found = hashlib.sha256(wheel).hexdigest()
    if found != expected:
        sys.exit(f"install-uv: {filename} has SHA-256 {found}, not the pinned {expected}")
    target = Path(destination) / "uv"
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        target.write_bytes(archive.read(f"uv-{version}.data/scripts/uv"))
    target.chmod(0o755)
    reported = subprocess.run(
        [str(target), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()
    if reported[:2] != ["uv", version]:
        target.unlink()
        sys.exit(f"install-uv: {target} reports {' '.join(reported)}, not uv {version}")
    print(f"install-uv: uv {version} ({machine}) in {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
