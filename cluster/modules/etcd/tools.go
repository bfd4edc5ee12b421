//go:build tools

// Package tools names the etcd server command this module builds, so that go.mod and go.sum pin
// every module it needs.
package tools

import _ "go.etcd.io/etcd/server/v3"
