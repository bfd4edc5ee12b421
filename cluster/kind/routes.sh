#!/usr/bin/env bash
# Routes every node's pod range through that node, on every other node: what kind's kindnetd
# does, for the node image built here, which has no kindnetd (its module is not served).
# Without them kube-proxy on one node sends a Service's packets to pods on another and they
# are lost. Run after `kind create cluster`; safe to run again.
#
# Usage: cluster/kind/routes.sh CONTEXT   (a kubectl context of the kind cluster)
set -euo pipefail
context=${1:?usage: routes.sh CONTEXT}
nodes=$(kubectl --context "$context" get nodes -o \
    jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
while read -r node _ _; do
    while read -r other cidr address; do
        [ "$other" = "$node" ] && continue
        [ -n "$cidr" ] || { echo "node $other has no pod range yet" >&2; exit 1; }
        docker exec "$node" ip route replace "$cidr" via "$address"
    done <<<"$nodes"
done <<<"$nodes"
echo "routes between the pod ranges of $(wc -l <<<"$nodes") nodes"
