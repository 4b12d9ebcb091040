// Package rebalancer holds the scheduler-aware rebalancer, one package per
// idea: signals (how a node becomes at risk), snapshot (what the cluster
// looks like), simulation (where the scheduler would put pods), planner
// (what to do, in which waves) and report (the dry-run plan for people and
// machines). The controller executes the planner's plans; the report only
// renders them.
package rebalancer
