// Package controlplane builds a real Kubernetes control plane for the
// project's tests and for `make dev`. See build.sh.
package controlplane
