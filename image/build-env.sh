#!/usr/bin/env bash
# Build the image of the build stage: BASE plus the build host's CA bundle and uv.
#
# Only the first stage of image/Dockerfile.template uses it; the image that ships starts from
# BASE again, so the host's CA bundle and uv never reach a production pod. Docker's build cache
# makes a rebuild with the same inputs instant, so it is rebuilt on every `make image`.
#
# Usage: image/build-env.sh BASE TAG
# Env:   HOST_CA_BUNDLE  CA bundle downloads trust while building
#                        (default /etc/ssl/certs/ca-certificates.crt)
#        UV_BINARY       uv executable to copy in (default: the one on PATH)
set -euo pipefail

base=${1:?usage: build-env.sh BASE TAG}
tag=${2:?usage: build-env.sh BASE TAG}
here=$(cd "$(dirname "$0")" && pwd)
ca_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
uv_binary=${UV_BINARY:-$(command -v uv || true)}

log() { echo "build-env: $*" >&2; }

[[ -r $ca_bundle ]] || { log "CA bundle $ca_bundle not readable"; exit 1; }
[[ -x $uv_binary ]] || { log "uv not found: install the dev dependencies or set UV_BINARY"; exit 1; }

context=$(mktemp -d /var/tmp/iris-build-env.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$here/build-env/Dockerfile" "$context/Dockerfile"
cp "$ca_bundle" "$context/build-host-ca.crt"
install -m 0755 "$uv_binary" "$context/uv"
DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "BASE_IMAGE=$base" \
    --tag "$tag" "$context" >/dev/null
echo "$tag"
