//go:build tools

// Package tools names the kind command this module builds, so that go.mod and go.sum pin every
// module it needs.
package tools

import _ "sigs.k8s.io/kind"
