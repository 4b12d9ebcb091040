// Package cluster runs the project's end-to-end tests against a real local
// control plane: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, with kwok's fake kubelets (README, "Development"). One cluster is
// started per test binary from TestMain and always torn down, also when the
// tests fail or are interrupted; clusters left behind by a killed test binary
// are swept at the next start.
//
// The helpers read like the tests' stories: add a Spot node to a pool, make a
// namespace, wait for a condition.
package cluster
