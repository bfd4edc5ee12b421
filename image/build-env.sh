#!/usr/bin/env bash
# Build the image of the build stage: BASE plus the build host's CA bundle (when it has one)
# and a pinned uv, installed inside the image.
#
# Only the first stage of image/Dockerfile.template uses it; the image that ships starts from
# BASE again, so neither the host's CA bundle nor uv ever reaches a production pod. Docker's
# build cache makes a rebuild with the same inputs instant, so it is rebuilt on every `make image`.
#
# Usage: image/build-env.sh BASE TAG
# Env:   HOST_CA_BUNDLE  CA bundle downloads trust while building; default: the first found of
#                        Debian's, macOS's and Fedora's (build-host.sh); "none": the base's own
set -euo pipefail

base=${1:?usage: build-env.sh BASE TAG}
tag=${2:?usage: build-env.sh BASE TAG}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image/build-host.sh
source "$here/build-host.sh"

log() { echo "build-env: $*" >&2; }

choose_docker_builder
ca_bundle=$(find_host_ca_bundle)

context=$(mktemp -d "${TMPDIR:-/tmp}/iris-build-env.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp "$here/build-env/Dockerfile" "$here/build-env/install-uv.py" "$here/build-env/uv.txt" "$context/"
if [[ -n $ca_bundle ]]; then
    log "downloads in the build stage trust $ca_bundle"
    cp "$ca_bundle" "$context/build-host-ca.crt"
else
    log "no CA bundle on this host: the build stage trusts its base's"
    : >"$context/build-host-ca.crt"
fi
docker build --quiet --network host --build-arg "BASE_IMAGE=$base" \
    --tag "$tag" "$context" >/dev/null
echo "$tag"
