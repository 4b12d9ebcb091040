// Package aws holds the AWS side of an install (IAM policy, queue and
// EventBridge rules; see README.md) and the test that keeps it in step
// with the code.
package aws
