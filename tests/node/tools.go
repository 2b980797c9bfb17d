// Package node builds the parts of a real Kubernetes node that do not come
// from the k8s.io/kubernetes module (those are built with the control plane):
// containerd, the CNI plugins and a minimal CoreDNS. See build.sh.
package node
