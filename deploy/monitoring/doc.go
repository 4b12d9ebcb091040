// Package monitoring reads the chart's alerting rules and Grafana dashboard
// (deploy/chart/spot-rebalancer/files) for the tests that keep them in step
// with the code: the rules' unit tests (alerts_test.yaml, run by the real
// promtool in `make test-alerts`), the structure checks here, and the
// end-to-end check that every metric they query is served.
package monitoring
