// Package decide is the rebalancer's next step for one node, as a pure
// function of what the controller gathered (the node, its signal, its plan,
// the surges off it, the time and the configuration): a state transition
// with a typed state and reason code, the evictions and deletions to make
// and the surge steps to take. It reads nothing and writes nothing; the
// executor carries a Decision out and the controller only wires the two.
//
// The surge protocol's steps are decided the same way (Surge), from the
// record, the live Deployment and its pods.
package decide
