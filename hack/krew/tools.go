//go:build tools

// Package tools records krew's command for `go mod tidy`.
package tools

import _ "sigs.k8s.io/krew/cmd/krew"
