# catalio-operator. `make test` is what CI runs; `make dev` is the quick start.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CLUSTER_DIR ?= $(CURDIR)/.cluster
CLUSTER := tests/controlplane/cluster.sh
NODE := tests/node/node.sh
# A short path: containerd's sockets live there (at most 40 characters).
NODE_DIR ?= /tmp/catalio-dev-node
CRDS := crds/catalio-crds.yaml
OPERATOR := target/debug/catalio-operator
# Python and JavaScript OAuth/JOSE clients the tests check the server against.
PYCLIENTS ?= $(HOME)/.cache/catalio-operator/pyclients
export CATALIO_TEST_PYTHON := $(PYCLIENTS)/bin/python
JSCLIENTS ?= $(HOME)/.cache/catalio-operator/jsclients
export CATALIO_TEST_OAUTH4WEBAPI := $(JSCLIENTS)/node_modules/oauth4webapi

.PHONY: test lint build bench chaos fuzz crds docs controlplane prometheus node pyclients jsclients cluster-up cluster-down cluster-env node-up node-down node-env image dev

## Every test: formatting, lints, unit tests and the integration tests on a
## real control plane (and tests/node.rs on a real node); then proof that no
## control-plane or node process, and no node cgroup, outlived them.
test: lint controlplane node prometheus pyclients jsclients
	cargo test --all-targets --locked
	$(CLUSTER) leftovers
	$(NODE) leftovers

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

build:
	cargo build --locked

## Benchmarks that print figures (release build, own control plane).
bench: controlplane
	bench/token.sh
	bench/oauth.sh
	bench/clients.sh
	bench/credentials.sh
	bench/api.sh
	bench/audit.sh

## Faults that print figures and count damage (release build, own control
## plane): SIGKILLs at random moments among credential operations and Secret
## edits, leader failover under a burst of changes and signing-key rotation,
## the API server (and, separately, etcd) gone under load, and watches
## closed and refused with 410 Gone. The scripts in chaos/ take larger counts.
chaos: controlplane
	chaos/crash.sh 100 10
	chaos/failover.sh 5
	chaos/outage.sh 10 apiserver
	chaos/outage.sh 10 etcd
	chaos/watches.sh 1000

## Fuzzes every parser that takes bytes from the network: FUZZ_SECONDS per
## target without a sanitizer, then FUZZ_ASAN_SECONDS with AddressSanitizer.
FUZZ_SECONDS ?= 60
FUZZ_ASAN_SECONDS ?= 30
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS) none
	fuzz/run.sh $(FUZZ_ASAN_SECONDS) address

## Regenerates crds/ from the Rust types (a test fails when they drift).
crds: build
	$(OPERATOR) crds > $(CRDS)
	cp $(CRDS) charts/catalio-operator/$(CRDS)

## Regenerates the reference documents in docs/ (a test fails when they
## drift).
docs: build
	for doc in crds metrics flags; do $(OPERATOR) reference $$doc > docs/$$doc.md; done

## Builds Prometheus and promtool, and fetches the Gateway API and
## Prometheus Operator CRDs (cached outside the repository).
prometheus:
	tests/prometheus/build.sh > /dev/null

## Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm
## (cached outside the repository).
controlplane:
	tests/controlplane/build.sh > /dev/null

## Builds containerd, the CNI plugins, CoreDNS and pause (cached likewise).
node:
	tests/node/build.sh > /dev/null

## The operator image as an OCI tarball, built with the Dockerfile's steps
## and no container engine (what the node imports).
image:
	image/build.sh target/catalio-operator-image.tar

pyclients: $(PYCLIENTS)/.installed

$(PYCLIENTS)/.installed: tests/clients/requirements.txt
	python3 -m venv $(PYCLIENTS)
	$(PYCLIENTS)/bin/pip install --quiet --disable-pip-version-check -r $<
	cp $< $@

jsclients: $(JSCLIENTS)/.installed

$(JSCLIENTS)/.installed: tests/clients/package.json tests/clients/package-lock.json
	mkdir -p $(JSCLIENTS)
	cp $^ $(JSCLIENTS)/
	cd $(JSCLIENTS) && npm ci --no-audit --no-fund --silent
	touch $@

cluster-up:
	$(CLUSTER) up $(CLUSTER_DIR) --crds crds > /dev/null

cluster-down:
	$(CLUSTER) down $(CLUSTER_DIR)

cluster-env:
	@$(CLUSTER) env $(CLUSTER_DIR)

## A real one-node cluster (kubelet, containerd, runc, CNI, kube-proxy,
## CoreDNS) in its own network and mount namespace, with the operator image
## imported: `helm install` runs real pods there. Needs root. While it is
## up, `eval "$$(make -s node-env)"` points kubectl and helm at it instead
## of the plain control plane.
node-up: image
	$(NODE) up $(NODE_DIR) > /dev/null
	$(NODE) import $(NODE_DIR) target/catalio-operator-image.tar

node-down:
	$(NODE) down $(NODE_DIR)

node-env:
	@$(NODE) env $(NODE_DIR)

## Local control plane, CRDs, a sample credential and the operator in the
## foreground, with the curl line that gets a token.
dev: build cluster-up
	@eval "$$($(CLUSTER) env $(CLUSTER_DIR))"; \
	kubectl apply --server-side -f crds/ > /dev/null; \
	kubectl apply -f examples/apicredential.yaml -f examples/requirements.yaml; \
	echo; \
	echo "The operator runs below (Ctrl-C stops it; 'make cluster-down' stops the cluster)."; \
	echo "In another shell:"; \
	echo '  eval "$$(make -s cluster-env)"'; \
	echo '  ID=$$(kubectl get secret ci-pipeline -o jsonpath={.data.client_id} | base64 -d)'; \
	echo '  SECRET=$$(kubectl get secret ci-pipeline -o jsonpath={.data.client_secret} | base64 -d)'; \
	echo '  TOKEN=$$(curl -s -X POST http://127.0.0.1:8080/oauth/token -H "Content-Type: application/json" \'; \
	echo '    -d "{\"client_id\":\"$$ID\",\"client_secret\":\"$$SECRET\",\"audience\":\"https://catalio.ai/api/v1\",\"grant_type\":\"client_credentials\"}" \'; \
	echo '    | sed -E '"'"'s/.*"access_token":"([^"]+)".*/\1/'"'"')'; \
	echo '  curl -s "http://127.0.0.1:8080/api/v1/requirements?include=persona" \'; \
	echo '    -H "Accept: application/vnd.api+json" -H "Authorization: Bearer $$TOKEN"'; \
	echo; \
	exec $(OPERATOR) run --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9090 \
	  --token-url http://127.0.0.1:8080/oauth/token
