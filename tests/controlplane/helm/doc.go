// Package helm pins the helm v3 command line. It has its own module because
// helm's Kubernetes client libraries need not match the control plane's.
package helm
