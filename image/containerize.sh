#!/usr/bin/env bash
# Turn a Bento into the service image with `bentoml containerize`, printing the image
# reference as the last line of output.
#
# Usage: image/containerize.sh BENTO_TAG IMAGE_REF
# Env:   BASE_IMAGE        auto (default): the bentofile's base_image if it is present or can
#                          be pulled, else the local one; "default"; "local"; or any reference
#        LOCAL_BASE_IMAGE  tag of the debootstrapped base (built by build-base-image.sh if missing)
#        BUILD_ENV_IMAGE   tag for the build stage's image (build-env.sh), which is never shipped
#        HOST_CA_BUNDLE    the CA bundle the build stage trusts (see build-env.sh)
#        VERSION, REVISION values for the OCI labels
#        BENTOML           the bentoml executable (default: bentoml on PATH)
set -euo pipefail

bento_tag=${1:?usage: containerize.sh BENTO_TAG IMAGE_REF}
image_ref=${2:?usage: containerize.sh BENTO_TAG IMAGE_REF}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bentoml=$(realpath "$(command -v "${BENTOML:-bentoml}")")
local_base=${LOCAL_BASE_IMAGE:?LOCAL_BASE_IMAGE is not set (make image sets it)}
build_env=${BUILD_ENV_IMAGE:-iris-image-build-env:latest}
default_base=$(sed -n 's/^  base_image: *//p' "$repo/bentofile.yaml")

# shellcheck source=image/build-host.sh
source "$here/build-host.sh"

log() { echo "containerize: $*" >&2; }

# BuildKit where docker buildx is installed, else the classic builder; said in one line. Every
# build below (base, build stage, image) uses the same one.
choose_docker_builder

case ${BASE_IMAGE:-auto} in
    auto)
        if docker image inspect "$default_base" >/dev/null 2>&1 ||
            docker pull --quiet "$default_base" >/dev/null 2>&1; then
            base=$default_base
        else
            log "cannot pull $default_base: building on the local base image $local_base"
            base=$local_base
        fi
        ;;
    default) base=$default_base ;;
    local) base=$local_base ;;
    *) base=$BASE_IMAGE ;;
esac
if [[ $base == "$local_base" ]]; then
    "$here/build-base-image.sh" "$local_base" >/dev/null
fi
"$here/build-env.sh" "$base" "$build_env" >/dev/null
log "building $image_ref from $bento_tag on $base (packages installed in $build_env)"

# bentoml containerize reads DOCKER_BUILDKIT too: with BuildKit its Dockerfile adds cache
# mounts, with the classic builder it leaves them out.
#
# BentoML 1.4 refuses a dockerfile_template outside the working directory and copies it to
# a temporary directory first (bentoml/BentoML#5566), so containerize runs from there.
export TMPDIR=/tmp
cd "$TMPDIR"
"$bentoml" containerize "$bento_tag" \
    --image-tag "$image_ref" \
    --network host \
    --build-arg "BASE_IMAGE=$base" \
    --build-arg "BUILD_IMAGE=$build_env" \
    --label "org.opencontainers.image.title=iris-classifier" \
    --label "org.opencontainers.image.version=${VERSION:-unknown}" \
    --label "org.opencontainers.image.revision=${REVISION:-unknown}" \
    --label "org.opencontainers.image.base.name=$base" \
    --label "ai.bentoml.bento=$bento_tag" >&2
echo "$image_ref"
