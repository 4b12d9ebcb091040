// Package certs owns the webhook's TLS: a self-managed CA and serving
// certificate kept in two Secrets, rotated by the leader controller with an
// overlap so that the API server never sees a certificate it cannot verify,
// the CA bundle kept in the MutatingWebhookConfigurations, and the serving
// side that swaps certificates in memory without a restart.
//
// The decisions are pure (Decide takes what the controller observed and a
// time, and returns what to write); Rotator gathers and writes.
package certs
