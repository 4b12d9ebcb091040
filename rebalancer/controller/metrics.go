package controller

import (
	"context"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

var (
	nodesDesc = prometheus.NewDesc("spot_rebalancer_nodes",
		"Nodes by the rebalancer state recorded on them.", []string{"state"}, nil)
	oldestSignalDesc = prometheus.NewDesc("spot_rebalancer_oldest_signal_timestamp_seconds",
		"Per state and reason code, the Unix time of the oldest Spot signal of a node in that state (absent when no node in it has a signal): time() minus it is how long the longest-waiting node has been at risk.",
		[]string{"state", "reason"}, nil)
)

// NodeCollector reports the nodes by state from the cache at each scrape,
// so the figures are never left over from a node's last reconcile (a node
// that leaves a state is not reconciled into the gauge otherwise).
type NodeCollector struct {
	Reader client.Reader
	Clock  clock.PassiveClock
	// Log receives the errors of a failed read, which leaves these two
	// metrics out of that scrape rather than failing the whole of it.
	Log logr.Logger
}

// Describe implements prometheus.Collector.
func (c *NodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesDesc
	ch <- oldestSignalDesc
}

// Collect implements prometheus.Collector.
func (c *NodeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nodes corev1.NodeList
	if err := c.Reader.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		c.Log.Error(err, "Reading the nodes for the metrics; spot_rebalancer_nodes left out of this scrape")
		return
	}
	counts, oldest := nodeFigures(nodes.Items, c.Clock.Now())
	for _, s := range signals.States {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	for k, t := range oldest {
		ch <- prometheus.MustNewConstMetric(oldestSignalDesc, prometheus.GaugeValue, float64(t.Unix()), string(k.State), string(k.Reason))
	}
}

// stateReason is a state with the reason code recorded beside it.
type stateReason struct {
	State  signals.State
	Reason signals.Reason
}

// nodeFigures counts the nodes in every state of signals.States (zero
// counts included, so that a state that empties reads 0) and finds, per
// state and reason code, the oldest signal (as signals.FromNode bounds it:
// never after now). Nodes with no state or an unknown one are left out.
func nodeFigures(nodes []corev1.Node, now time.Time) (map[signals.State]int, map[stateReason]time.Time) {
	counts := map[signals.State]int{}
	for _, s := range signals.States {
		counts[s] = 0
	}
	oldest := map[stateReason]time.Time{}
	for i := range nodes {
		state := signals.StateOf(nodes[i].Annotations)
		if _, ok := counts[state]; !ok {
			continue
		}
		counts[state]++
		sig, ok := signals.FromNode(&nodes[i], now)
		if !ok || sig.Since.IsZero() {
			continue
		}
		// The code is read from the node: one that is not ours becomes
		// "other", so a label's values stay few whoever wrote it.
		reason := signals.ReasonOf(nodes[i].Annotations)
		if !slices.Contains(signals.Reasons, reason) {
			reason = "other"
		}
		k := stateReason{state, reason}
		if t, seen := oldest[k]; !seen || sig.Since.Before(t) {
			oldest[k] = sig.Since
		}
	}
	return counts, oldest
}
