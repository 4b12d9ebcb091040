// Package sqstest is an in-memory SQS queue that speaks the SQS JSON 1.0
// wire protocol (ReceiveMessage, DeleteMessage), for tests that drive the
// real AWS SDK client. Messages received and not deleted come back on the
// next receive, as after a visibility timeout of zero.
package sqstest

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
)

// Queue is one SQS queue. Use it as an http.Handler.
type Queue struct {
	mu       sync.Mutex
	messages map[string]string // receipt handle -> body
	order    []string
}

var _ http.Handler = (*Queue)(nil)

// New returns an empty queue.
func New() *Queue { return &Queue{messages: map[string]string{}} }

// Add enqueues a message body under a receipt handle.
func (q *Queue) Add(handle, body string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.messages[handle] = body
	q.order = append(q.order, handle)
}

// Left returns the receipt handles still in the queue, oldest first.
func (q *Queue) Left() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for _, h := range q.order {
		if _, ok := q.messages[h]; ok {
			out = append(out, h)
		}
	}
	return out
}

// ServeHTTP answers the SQS JSON protocol.
func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	_ = json.NewDecoder(r.Body).Decode(&in)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	q.mu.Lock()
	defer q.mu.Unlock()
	switch r.Header.Get("X-Amz-Target") {
	case "AmazonSQS.ReceiveMessage":
		msgs := []map[string]string{}
		for _, h := range q.order {
			body, ok := q.messages[h]
			if !ok {
				continue
			}
			sum := md5.Sum([]byte(body))
			msgs = append(msgs, map[string]string{"MessageId": "m-" + h, "ReceiptHandle": h, "Body": body, "MD5OfBody": hex.EncodeToString(sum[:])})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Messages": msgs})
	case "AmazonSQS.DeleteMessage":
		h, _ := in["ReceiptHandle"].(string)
		delete(q.messages, h)
		_, _ = w.Write([]byte("{}"))
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"com.amazonaws.sqs#InvalidAction","message":"unsupported action"}`))
	}
}
