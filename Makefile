# catalio-operator. `make test` is what CI runs; `make dev` is the quick start.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CLUSTER_DIR ?= $(CURDIR)/.cluster
CLUSTER := tests/controlplane/cluster.sh
CRDS := crds/catalio-crds.yaml
OPERATOR := target/debug/catalio-operator

.PHONY: test lint build crds controlplane cluster-up cluster-down cluster-env dev

## Every test: formatting, lints, unit tests and the integration tests on a
## real control plane; then proof that no control-plane process outlived them.
test: lint controlplane
	cargo test --all-targets --locked
	$(CLUSTER) leftovers

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

build:
	cargo build --locked

## Regenerates crds/ from the Rust types (a test fails when they drift).
crds: build
	$(OPERATOR) crds > $(CRDS)

## Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm
## (cached outside the repository).
controlplane:
	tests/controlplane/build.sh > /dev/null

cluster-up:
	$(CLUSTER) up $(CLUSTER_DIR) --crds crds > /dev/null

cluster-down:
	$(CLUSTER) down $(CLUSTER_DIR)

cluster-env:
	@$(CLUSTER) env $(CLUSTER_DIR)

## Local control plane, CRDs, a sample credential and the operator in the
## foreground.
dev: build cluster-up
	@eval "$$($(CLUSTER) env $(CLUSTER_DIR))"; \
	kubectl apply --server-side -f crds/ > /dev/null; \
	kubectl apply -f examples/apicredential.yaml; \
	echo; \
	echo "The operator runs below (Ctrl-C stops it; 'make cluster-down' stops the cluster)."; \
	echo "In another shell:  eval \"\$$(make -s cluster-env)\"; kubectl get apicred"; \
	echo "Client secret:     kubectl get secret ci-pipeline -o jsonpath='{.data.client_secret}' | base64 -d"; \
	echo; \
	exec $(OPERATOR) controller
