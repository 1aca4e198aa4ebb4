//go:build tools

// Package tools records etcd's server command (the module root of
// go.etcd.io/etcd/server/v3 is its package main) for `go mod tidy`.
package tools

import _ "go.etcd.io/etcd/server/v3"
