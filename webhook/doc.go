// Package webhook owns the mutating admission webhook: it injects the
// tolerations, Spot preferences and topology spread of a configured profile
// into new pods, and attaches PodDisruptionBudget hints to Deployments and
// StatefulSets. It fails open: any internal error admits the request
// unchanged.
//
// The decisions are pure (SelectProfile, Mutation, Hint); the handlers read
// namespaces and PDBs from informer caches and never call the API server on
// the request path.
package webhook
