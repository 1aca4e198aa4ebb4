//go:build tools

// Package tools records runc, built for the local node, so that `go mod tidy`
// keeps its dependencies in go.sum.
package tools

import _ "github.com/opencontainers/runc"
