#!/usr/bin/env bash
# Assembles a kind node image here, as kind's base and node-image builders do, for a machine
# that reaches no container registry: kindest/node cannot be pulled, nor the images kubeadm
# runs. Every input is built here or comes from Debian's packages:
#   root filesystem  Debian bookworm (debootstrap, minbase): systemd, containerd 1.6, runc,
#                    containernetworking-plugins, iptables, conntrack and kind's other packages
#   kind's files     entrypoint, containerd config, systemd units: from the sigs.k8s.io/kind
#                    module pinned in cluster/modules/kind
#   Kubernetes       kubelet, kubeadm, kubectl, the control plane, kube-proxy and etcd from
#                    cluster/build.sh; pause compiled from Kubernetes' own C source
# kindnetd (kind's CNI) is not among them: its module is not served. containerd writes each
# node's CNI configuration from a template once the kubelet reports the node's pod range, and
# cluster/kind/routes.sh adds the routes between nodes that kindnetd would add.
#
# Usage: cluster/kind/build-node-image.sh TAG   (REBUILD=1 rebuilds; DEBIAN_MIRROR as apt's)
set -euo pipefail
tag=${1:?usage: build-node-image.sh TAG}
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "build-node-image: $*" >&2; }

if [[ ${REBUILD:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already exists (REBUILD=1 to rebuild)"
    exit 0
fi
for tool in debootstrap docker gcc go; do
    command -v "$tool" >/dev/null || { log "$tool is not installed"; exit 1; }
done

commands=$("$here/../build.sh" --print-dir)
"$here/../build.sh" >&2
bin=$commands/bin
kubernetes=$(cd "$here/../modules/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
kind_files=$(cd "$here/../modules/kind" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)/images/base/files
kubernetes_source=$(cd "$here/../modules/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
# The tags kubeadm asks for: its constants for this release.
constants=$kubernetes_source/cmd/kubeadm/app/constants/constants.go
etcd_tag=$(sed -n 's/^\s*DefaultEtcdVersion = "\(.*\)"/\1/p' "$constants")
pause_tag=$(sed -n 's/^\s*PauseVersion = "\(.*\)"/\1/p' "$constants")
test -n "$etcd_tag" -a -n "$pause_tag" || { log "no etcd or pause version in $constants"; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/iris-kind-node.XXXXXX)
rootfs=$work/rootfs
cleanup() {
    umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The Debian part changes only with the package list: kept as an image of its own.
packages=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount
packages+=,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,containerd,runc
packages+=,containernetworking-plugins,socat
debian_image=iris-kind-debian:bookworm-$(echo "$packages" | sha256sum | cut -c1-12)
mkdir -p "$rootfs"
if ! docker image inspect "$debian_image" >/dev/null 2>&1; then
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include="$packages" --components=main bookworm "$rootfs" \
        "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$debian_image" >/dev/null
else
    log "Debian packages from $debian_image"
    container=$(docker create "$debian_image" /bin/true)
    docker export "$container" | tar -C "$rootfs" -x
    docker rm "$container" >/dev/null
fi

log "images for kubeadm: the control plane, kube-proxy, etcd $etcd_tag, pause $pause_tag"
images=$work/images
mkdir -p "$images"
single_binary_image() {  # single_binary_image TAG BINARY...: an image of static binaries only
    local image_tag=$1 dir
    shift
    dir=$(mktemp -d "$work/image.XXXXXX")
    mkdir -p "$dir/usr/local/bin"
    cp "$@" "$dir/usr/local/bin/"
    tar -C "$dir" -c . | docker import --change 'ENV PATH=/usr/local/bin' - "$image_tag" >/dev/null
}
for component in kube-apiserver kube-controller-manager kube-scheduler; do
    single_binary_image "registry.k8s.io/$component:$kubernetes" "$bin/$component"
done
single_binary_image "registry.k8s.io/etcd:$etcd_tag" "$bin/etcd"
gcc -Os -static -Wall -Werror -o "$work/pause" "$kubernetes_source/build/pause/linux/pause.c"
pause_dir=$work/pause-image
mkdir -p "$pause_dir"
cp "$work/pause" "$pause_dir/pause"
tar -C "$pause_dir" -c . | docker import --change 'ENTRYPOINT ["/pause"]' - \
    "registry.k8s.io/pause:$pause_tag" >/dev/null
# kube-proxy programs iptables: its image is the node's own root filesystem plus the command.
tar -C "$rootfs" -c . | docker import - "iris-kind-rootfs:$kubernetes" >/dev/null
proxy_dir=$work/kube-proxy
mkdir -p "$proxy_dir/usr/local/bin"
cp "$bin/kube-proxy" "$proxy_dir/usr/local/bin/"
printf 'FROM iris-kind-rootfs:%s\nCOPY usr/local/bin/kube-proxy /usr/local/bin/kube-proxy\n' \
    "$kubernetes" >"$proxy_dir/Dockerfile"
docker build -q -t "registry.k8s.io/kube-proxy:$kubernetes" "$proxy_dir" >/dev/null
for image in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    docker save -o "$images/$image.tar" "registry.k8s.io/$image:$kubernetes"
done
docker save -o "$images/etcd.tar" "registry.k8s.io/etcd:$etcd_tag"
docker save -o "$images/pause.tar" "registry.k8s.io/pause:$pause_tag"

log "kind's files and units"
install -m 0755 "$kind_files"/usr/local/bin/* "$rootfs/usr/local/bin/"
install -m 0755 "$here/node/entrypoint" "$rootfs/usr/local/bin/iris-node-entrypoint"
mkdir -p "$rootfs/kind/bin" "$rootfs/etc/containerd" "$rootfs/etc/systemd/system/kubelet.service.d"
install -m 0644 "$kind_files"/kind/README.txt "$rootfs/kind/"
install -m 0755 "$kind_files"/kind/bin/* "$rootfs/kind/bin/"
install -m 0644 "$kind_files"/etc/crictl.yaml "$rootfs/etc/"
install -m 0644 "$kind_files"/etc/containerd/* "$rootfs/etc/containerd/"
install -m 0644 "$kind_files"/etc/default/* "$rootfs/etc/default/"
install -m 0644 "$kind_files"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
install -m 0644 "$kind_files"/etc/systemd/system/*.service "$kind_files"/etc/systemd/system/*.slice \
    "$rootfs/etc/systemd/system/"
install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* \
    "$rootfs/etc/systemd/system/kubelet.service.d/"
rm -f "$rootfs/etc/systemd/system/containerd-fuse-overlayfs.service"
# kind's units name the paths of its own builds; Debian installs the same commands elsewhere.
for command in containerd ctr containerd-shim-runc-v2; do
    ln -sf "/usr/bin/$command" "$rootfs/usr/local/bin/$command"
done
mkdir -p "$rootfs/opt/cni"
ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"
install -m 0755 "$bin/kubelet" "$bin/kubeadm" "$bin/kubectl" "$rootfs/usr/bin/"
install -m 0644 "$here/node/"*.service "$rootfs/etc/systemd/system/"
mkdir -p "$rootfs/etc/systemd/system/containerd.service.d" "$rootfs/etc/cni/net.d"
install -m 0644 "$here/node/containerd-oom.conf" "$rootfs/etc/systemd/system/containerd.service.d/"
install -m 0644 "$here/node/cni-template.json" "$rootfs/etc/cni/net.d/template"
cat "$here/node/containerd-config.toml" >>"$rootfs/etc/containerd/config.toml"
# Pods may not be given a lower OOM score than containerd's own: none can go below 0 without
# CAP_SYS_RESOURCE, and runc would fail a Guaranteed pod's -997.
sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$rootfs/etc/containerd/config.toml"
sed -i "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:$pause_tag\"|" \
    "$rootfs/etc/containerd/config.toml"
mkdir -p "$rootfs/kind/images" "$rootfs/etc/kubernetes/manifests"
cp "$images"/*.tar "$rootfs/kind/images/"
echo "$kubernetes" >"$rootfs/kind/version"

log "systemd: kind's units on, the rest off"
chroot "$rootfs" /bin/sh -euc '
    ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/*
    rm -f /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev*
    rm -f /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service kind-import-images.service
    systemctl mask systemd-binfmt.service
'
rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*

log "importing $tag"
tar -C "$rootfs" -c . | docker import - "$tag-rootfs" >/dev/null
# systemd checks `container` to know where it runs, and stops on SIGRTMIN+3, not SIGTERM.
# The label tells the Makefile this node has no CNI daemon (cluster/kind/routes.sh).
printf '%s\n' "FROM $tag-rootfs" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
    'LABEL io.iris-classifier.kind-node=routes' \
    'ENTRYPOINT ["/usr/local/bin/iris-node-entrypoint", "/sbin/init"]' | docker build -q -t "$tag" - >/dev/null
docker rmi "$tag-rootfs" >/dev/null
log "built $tag (Kubernetes $kubernetes)"
