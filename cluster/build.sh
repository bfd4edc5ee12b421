#!/usr/bin/env bash
# Builds the local cluster's commands from their Go modules, once per release, into a cache
# outside the checkout: no prebuilt Kubernetes binary is downloaded.
#
# Inputs, each pinned by the go.mod and go.sum beside it (the Go module proxy and its checksum
# database verify every download):
#   modules/kubernetes k8s.io/kubernetes, its staging modules replaced by the same release:
#                      the commands below
#   modules/etcd       go.etcd.io/etcd/server/v3: etcd
#   modules/kwok       sigs.k8s.io/kwok: kwok, and its node and pod lifecycle stages
#   modules/kind       sigs.k8s.io/kind: kind, and the files its node images are made of
# and the CustomResourceDefinitions the overlays' objects need, from the modules that publish
# them (`go mod download` checks each against the checksum database):
crd_modules=(
    "sigs.k8s.io/gateway-api@v1.4.1 config/crd/standard"
    "github.com/prometheus-operator/prometheus-operator@v0.85.0 example/prometheus-operator-crd"
    "github.com/kserve/kserve@v0.20.0 config/crd/full/serving.kserve.io_inferenceservices.yaml config/crd/full/serving.kserve.io_servingruntimes.yaml"
    "github.com/fluxcd/flagger@v1.36.1 artifacts/flagger/crd.yaml"
)
#
# Usage: cluster/build.sh [--print-dir]   (CLUSTER_CACHE chooses the cache; --print-dir prints
# the directory that holds bin/ and stages.yaml, and builds nothing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

module_version() {  # module_version DIR MODULE: the version DIR's go.mod requires
    (cd "$here/modules/$1" && go list -m -f '{{.Version}}' "$2")
}

kubernetes=$(module_version kubernetes k8s.io/kubernetes)
etcd=$(module_version etcd go.etcd.io/etcd/server/v3)
kwok=$(module_version kwok sigs.k8s.io/kwok)
kind=$(module_version kind sigs.k8s.io/kind)
cache=${CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iris-classifier/cluster}
kubernetes_commands=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm
    kube-proxy)
# The directory names every release; the hash covers what else it holds.
contents=$(printf '%s\n' "${crd_modules[@]}" "${kubernetes_commands[@]}" | sha256sum | cut -c1-12)
out="$cache/kubernetes-$kubernetes-etcd-$etcd-kwok-$kwok-kind-$kind-$contents"

if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi

if [ -f "$out/.complete" ]; then
    echo "cluster commands: $out (built before)"
    exit 0
fi
mkdir -p "$out/bin"
started=$SECONDS

# The version variables `kubectl version` and the API server's /version report; a module
# build has no git tree for Kubernetes' own scripts to read them from.
minor=${kubernetes#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$kubernetes -X $package.gitMajor=1 -X $package.gitMinor=$minor"
    ldflags+=" -X $package.gitTreeState=clean"
done

echo "building Kubernetes $kubernetes: ${kubernetes_commands[*]}"
(cd "$here/modules/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/bin/" \
    "${kubernetes_commands[@]/#/k8s.io/kubernetes/cmd/}")

echo "building etcd $etcd"
(cd "$here/modules/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" \
    go.etcd.io/etcd/server/v3)

echo "building kwok $kwok"
(cd "$here/modules/kwok" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin/kwok" \
    sigs.k8s.io/kwok/cmd/kwok)

echo "building kind $kind"
(cd "$here/modules/kind" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/bin/kind" \
    sigs.k8s.io/kind)

# kwok does nothing to a node or pod without stages: the release's own "fast" ones (nodes Ready
# at once, pods Running and Ready once scheduled) and the lease heartbeat that keeps nodes Ready.
echo "writing kwok's stages"
kwok_dir=$(cd "$here/modules/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for stage in node/fast node/heartbeat-with-lease pod/fast; do
    "$out/bin/kubectl" kustomize "$kwok_dir/kustomize/stage/$stage"
    echo "---"
done > "$out/stages.yaml"

echo "copying the CRDs"
mkdir -p "$out/crds"
for entry in "${crd_modules[@]}"; do
    read -r module paths <<<"$entry"
    dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    test -n "$dir" || { echo "go mod download $module gave no directory" >&2; exit 1; }
    # Named after the module too: two modules may both call theirs crd.yaml.
    name=${module%@*}
    name=${name##*/}
    for path in $paths; do
        find "$dir/$path" -name '*.yaml' ! -name kustomization.yaml -print0 |
            while IFS= read -r -d '' file; do cp "$file" "$out/crds/${name}_$(basename "$file")"; done
    done
done

touch "$out/.complete"
echo "cluster commands: $out (built in $((SECONDS - started)) s)"
