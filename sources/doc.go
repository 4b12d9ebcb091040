// Package sources holds the controller's AWS signal sources: the
// EventBridge-to-SQS queue (package queue). They write the same Node
// conditions as the per-node agent.
package sources
