//go:build tools

// Package tools records the helm command built for rendering and linting the
// chart, so that `go mod tidy` keeps its dependencies in go.sum.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
