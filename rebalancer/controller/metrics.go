package controller

import (
	"context"
	"time"

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
		"Per state, the Unix time of the oldest Spot signal of a node in that state (absent when no node in it has a signal): time() minus it is how long the longest-waiting node has been at risk.",
		[]string{"state"}, nil)
)

// NodeCollector reports the nodes by state from the cache at each scrape,
// so the figures are never left over from a node's last reconcile (a node
// that leaves a state is not reconciled into the gauge otherwise).
type NodeCollector struct {
	Reader client.Reader
	Clock  clock.PassiveClock
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
		ch <- prometheus.NewInvalidMetric(nodesDesc, err)
		return
	}
	for _, f := range nodeFigures(nodes.Items, c.Clock.Now()) {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(f.Count), string(f.State))
		if !f.OldestSignal.IsZero() {
			ch <- prometheus.MustNewConstMetric(oldestSignalDesc, prometheus.GaugeValue, float64(f.OldestSignal.Unix()), string(f.State))
		}
	}
}

// stateFigures are one state's figures.
type stateFigures struct {
	State signals.State
	Count int
	// OldestSignal is the earliest signal time among the state's nodes
	// (as signals.FromNode bounds it: never after now); zero when none
	// has a signal.
	OldestSignal time.Time
}

// nodeFigures counts the nodes in every state (signals.States, zero
// counts included, so that a state that empties reads 0) and finds each
// state's oldest signal.
func nodeFigures(nodes []corev1.Node, now time.Time) []stateFigures {
	out := make([]stateFigures, len(signals.States))
	at := map[signals.State]int{}
	for i, s := range signals.States {
		out[i].State, at[s] = s, i
	}
	for j := range nodes {
		i, ok := at[signals.StateOf(nodes[j].Annotations)]
		if !ok {
			continue
		}
		out[i].Count++
		sig, ok := signals.FromNode(&nodes[j], now)
		if ok && !sig.Since.IsZero() && (out[i].OldestSignal.IsZero() || sig.Since.Before(out[i].OldestSignal)) {
			out[i].OldestSignal = sig.Since
		}
	}
	return out
}
