// Package sources holds what the controller's AWS sources share: the
// index from EC2 instance id to Node. The sources themselves are the
// EventBridge-to-SQS queue (package queue) and the EC2 API (package ec2);
// they write the same Node conditions as the per-node agent.
package sources
