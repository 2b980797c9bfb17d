// Package prometheus pins Prometheus and promtool, built from their Go
// module for the chart's alert tests (promtool test rules) and dashboard
// test (a real Prometheus that scrapes the operator). Its own module:
// Prometheus's dependencies need not match the control plane's. See
// build.sh.
package prometheus
