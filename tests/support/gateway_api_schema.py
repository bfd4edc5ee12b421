"""The Gateway API schema check (tests/gateway_api/validate.mjs) called from Python; it also
checks the CiliumNetworkPolicy of the gateway-access/cilium component.

The validators come from the npm package pinned in tests/gateway_api/package-lock.json;
`make test` installs them with `npm ci` when npm is there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.manifests import Manifest

CHECK_DIR = Path(__file__).parents[1] / "gateway_api"


def unavailable_reason() -> str | None:
    """Why the check cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "the Gateway API schema check needs Node.js"
    for package in ("gateway-api", "cilium"):
        if not (CHECK_DIR / "node_modules" / "@kubernetes-models" / package).is_dir():
            return f"the {package} validators are not installed: npm ci --prefix tests/gateway_api"
    return None


def schema_errors(objects: Sequence[Manifest]) -> list[list[str]]:
    """For each object, why the Gateway API schema rejects it (an empty list when it passes)."""
    result = subprocess.run(
        ["node", str(CHECK_DIR / "validate.mjs")],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)
