#!/usr/bin/env bash
# Build a slim Python 3.11 base image from Debian bookworm packages with debootstrap.
#
# Why: build farms without access to a container registry cannot pull python:3.11-slim,
# but they can reach a Debian mirror. The image built here stands in for it: Debian's
# Python 3.11, bash, useradd and Debian's ca-certificates, nothing else. It is the base of
# the image that ships, so it holds no build tool and trusts only what Debian's
# ca-certificates enables: the build host's CA bundle and uv go into a build stage only
# (image/build-env.sh). No compiler, no git, no documentation.
#
# Usage: image/build-base-image.sh TAG        (make base-image passes the Makefile's LOCAL_BASE_IMAGE)
# Env:   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  mirrors (default: read from apt's sources)
#        HOST_CA_BUNDLE  CA bundle apt uses for an https mirror while building (default: the
#                        first found of Debian's, macOS's and Fedora's, see build-host.sh;
#                        "none": apt's own); it is not left in the image
#        REBUILD=1       rebuild even if TAG already exists
set -euo pipefail

tag=${1:?usage: build-base-image.sh TAG}
suite=bookworm
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image/build-host.sh
source "$here/build-host.sh"

log() { echo "build-base-image: $*" >&2; }

if [[ ${REBUILD:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already exists (REBUILD=1 to rebuild)"
    echo "$tag"
    exit 0
fi

# The first URI apt is configured with for a suite, in deb822 (*.sources) or one-line format.
apt_mirror_for() {
    local wanted=$1 file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -e $file ]] || continue
        awk -v wanted="$wanted" '
            /^URIs:/   { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == wanted) found = 1 }
            /^$/       { if (found && uri) print uri; uri = ""; found = 0 }
            END        { if (found && uri) print uri }' "$file"
    done
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
        awk -v wanted="$wanted" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i + 1) == wanted) print $i; break } }' |
        head -n1
}

mirror=${DEBIAN_MIRROR:-$(apt_mirror_for "$suite" | head -n1 || true)}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(apt_mirror_for "$suite-security" | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security}
ca_bundle=$(find_host_ca_bundle)

command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }

workdir=$(mktemp -d /var/tmp/iris-base.XXXXXX)
rootfs=$workdir/rootfs
cleanup() {
    # debootstrap may leave /proc and /sys mounted inside the tree when it fails.
    umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT

log "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,ca-certificates --components=main \
    "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 ||
    { tail -n 30 "$workdir/debootstrap.log" >&2; exit 1; }

# Same mirrors as the build host, plus the point releases and security updates.
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SOURCES
# Like the official slim images: later apt installs skip documentation and man pages.
cp "$here/base/dpkg-nodoc" "$rootfs/etc/dpkg/dpkg.cfg.d/nodoc"
cp "$here/base/apt-slim" "$rootfs/etc/apt/apt.conf.d/90slim"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# The host's bundle is apt's only, for an https mirror behind a TLS-inspecting proxy; it sits
# in /tmp, which is emptied below, and Debian's own bundle stays as ca-certificates made it.
apt_ca=""
if [[ -n $ca_bundle ]]; then
    cp "$ca_bundle" "$rootfs/tmp/build-host-ca.crt"
    apt_ca="-o Acquire::https::CAInfo=/tmp/build-host-ca.crt"
fi

log "applying $suite-updates and $suite-security"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    APT_CA="$apt_ca" sh -euc 'apt-get $APT_CA update -qq &&
        apt-get $APT_CA -qq -y upgrade &&
        apt-get -qq clean' >"$workdir/upgrade.log" 2>&1 ||
    { tail -n 30 "$workdir/upgrade.log" >&2; exit 1; }

# Slim down: package lists, caches, docs (copyright files stay), man pages, locales.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian "$rootfs"/tmp/* \
    "$rootfs"/etc/resolv.conf "$rootfs"/etc/machine-id
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
# Docker writes its own resolv.conf and hostname at run time.
: >"$rootfs/etc/resolv.conf"

log "importing the root filesystem as $tag"
tar --numeric-owner --xattrs -C "$rootfs" -cf "$workdir/rootfs.tar" .
cp "$here/base/Dockerfile" "$workdir/Dockerfile"
choose_docker_builder
docker build --quiet --network host --tag "$tag" \
    --label org.opencontainers.image.base.name="debian:$suite (debootstrap)" \
    --label org.opencontainers.image.created="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$workdir" >/dev/null
echo "$tag"
