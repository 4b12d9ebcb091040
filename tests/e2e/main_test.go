// Package e2e holds the end-to-end tests that run against the local control
// plane started by package cluster.
package e2e

import (
	"testing"

	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }
