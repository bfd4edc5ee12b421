"""image/build-env/install-uv.py, the build stage's uv installer, against a local package index.

The index (PEP 691 JSON, as PyPI serves it) lists one wheel whose `uv` is a small script
reporting a version; the pins file says which wheel and SHA-256 to expect on this machine.
The real download from PyPI happens in every `make image` (tests/image/test_image.py).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import platform
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

INSTALLER = REPO_ROOT / "image" / "build-env" / "install-uv.py"
VERSION = "0.13.9"
WHEEL_NAME = f"uv-{VERSION}-py3-none-manylinux_2_17_test.whl"


def fake_wheel(reported_version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"uv-{VERSION}.data/scripts/uv", f"#!/bin/sh\necho 'uv {reported_version} (test)'\n"
        )
    return buffer.getvalue()


class Index(http.server.BaseHTTPRequestHandler):
    wheel = b""

    def do_GET(self) -> None:
        if self.path == "/simple/uv/":
            body = json.dumps({"files": [{"filename": WHEEL_NAME, "url": f"/files/{WHEEL_NAME}"}]})
            payload, content_type = body.encode(), "application/vnd.pypi.simple.v1+json"
        elif self.path == f"/files/{WHEEL_NAME}":
            payload, content_type = self.wheel, "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def install(
    index: str, tmp_path: Path, wheel: bytes, pinned_sha256: str, machine: str | None = None
) -> subprocess.CompletedProcess[str]:
    Index.wheel = wheel
    this_machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    pins = tmp_path / "uv.txt"
    pins.write_text(f"version {VERSION}\n{machine or this_machine} {WHEEL_NAME} {pinned_sha256}\n")
    destination = tmp_path / "bin"
    destination.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(INSTALLER), str(pins), str(destination)],
        env={"UV_WHEEL_INDEX": index, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_installs_the_pinned_wheels_uv(index: str, tmp_path: Path) -> None:
    wheel = fake_wheel(VERSION)
    result = install(index, tmp_path, wheel, hashlib.sha256(wheel).hexdigest())
    assert result.returncode == 0, result.stderr
    uv = tmp_path / "bin" / "uv"
    assert subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.startswith(
        f"uv {VERSION}"
    )


def test_refuses_a_wheel_whose_sha256_is_not_the_pinned_one(index: str, tmp_path: Path) -> None:
    wheel = fake_wheel(VERSION)
    result = install(index, tmp_path, wheel, "0" * 64)
    assert result.returncode != 0
    assert f"not the pinned {'0' * 64}" in result.stderr
    assert not (tmp_path / "bin" / "uv").exists()


def test_refuses_a_uv_that_reports_another_version(index: str, tmp_path: Path) -> None:
    wheel = fake_wheel("0.0.1")
    result = install(index, tmp_path, wheel, hashlib.sha256(wheel).hexdigest())
    assert result.returncode != 0
    assert f"reports uv 0.0.1 (test), not uv {VERSION}" in result.stderr


def test_says_when_no_wheel_is_pinned_for_this_machine(index: str, tmp_path: Path) -> None:
    wheel = fake_wheel(VERSION)
    result = install(index, tmp_path, wheel, hashlib.sha256(wheel).hexdigest(), "riscv64")
    assert result.returncode != 0
    assert "no uv wheel pinned for" in result.stderr
    assert "(pinned: riscv64)" in result.stderr
