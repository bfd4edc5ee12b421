# What the build host lends an image build, decided when the build runs. Sourced by
# containerize.sh, build-env.sh and build-base-image.sh.
#
# choose_docker_builder: BuildKit when `docker buildx` answers, else Docker's classic builder
#   (Debian's docker.io ships no buildx). An explicit DOCKER_BUILDKIT=0 or 1 wins. It says which
#   in one line and exports DOCKER_BUILDKIT, plus IRIS_DOCKER_BUILDER so that the scripts it
#   runs use the same builder without saying it again.
# find_host_ca_bundle: the CA bundle downloads trust while building (a TLS-inspecting proxy's
#   root included): HOST_CA_BUNDLE when set ("none" for no bundle), else the first of the
#   candidates that is readable; prints nothing when there is none.

# Debian and Ubuntu, macOS, Fedora and RHEL.
HOST_CA_BUNDLE_CANDIDATES=(
    /etc/ssl/certs/ca-certificates.crt
    /etc/ssl/cert.pem
    /etc/pki/tls/certs/ca-bundle.crt
)

choose_docker_builder() {
    local builder reason buildx
    case ${IRIS_DOCKER_BUILDER:-} in
        buildkit) export DOCKER_BUILDKIT=1; return ;;
        classic) export DOCKER_BUILDKIT=0; return ;;
    esac
    if [[ ${DOCKER_BUILDKIT:-} == 0 ]]; then
        builder=classic reason="DOCKER_BUILDKIT=0 is set"
    elif buildx=$(docker buildx version 2>/dev/null) && [[ -n $buildx ]]; then
        builder=buildkit reason="docker buildx $(awk '{print $2; exit}' <<<"$buildx")"
    elif [[ ${DOCKER_BUILDKIT:-} == 1 ]]; then
        builder=buildkit reason="DOCKER_BUILDKIT=1 is set, without docker buildx"
    else
        builder=classic reason="docker buildx is not installed"
    fi
    if [[ $builder == buildkit ]]; then
        echo "image build: BuildKit ($reason)" >&2
        export DOCKER_BUILDKIT=1
    else
        echo "image build: Docker's classic builder ($reason)" >&2
        export DOCKER_BUILDKIT=0
    fi
    export IRIS_DOCKER_BUILDER=$builder
}

# Usage: find_host_ca_bundle [CANDIDATE...] (default: HOST_CA_BUNDLE_CANDIDATES)
find_host_ca_bundle() {
    local candidate
    if [[ -n ${HOST_CA_BUNDLE:-} ]]; then
        [[ $HOST_CA_BUNDLE == none ]] && return 0
        if [[ ! -r $HOST_CA_BUNDLE ]]; then
            echo "HOST_CA_BUNDLE=$HOST_CA_BUNDLE is not a readable file (\"none\" builds without a host CA bundle)" >&2
            return 1
        fi
        echo "$HOST_CA_BUNDLE"
        return 0
    fi
    (($#)) || set -- "${HOST_CA_BUNDLE_CANDIDATES[@]}"
    for candidate in "$@"; do
        if [[ -f $candidate && -r $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
}
