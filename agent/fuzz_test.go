package agent

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// FuzzPoll serves arbitrary bodies on both Spot paths through the real
// IMDSv2 client. Whatever the metadata service says, Poll must not panic
// or fail, must report an event wherever one was served, and must never
// report a zero time.
func FuzzPoll(f *testing.F) {
	f.Add(`{"action":"terminate","time":"2026-11-26T12:02:00Z"}`, `{"noticeTime":"2026-11-26T11:59:00Z"}`)
	f.Add(`{"action":"stop","time":"not a time"}`, ``)
	f.Add(`<html>oops</html>`, `{"noticeTime":17}`)
	f.Add(`{"action":null,"time":"0001-01-01T00:00:00Z"}`, `[]`)
	f.Add(``, `{"noticeTime":"2026-11-26T11:59:00+09:00","extra":{"deep":[1,2,3]}}`)
	var action, rebalance atomic.Pointer[string]
	serve := func(p *atomic.Pointer[string]) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			if b := p.Load(); b != nil && *b != "" {
				_, _ = w.Write([]byte(*b))
				return
			}
			http.Error(w, "not found", http.StatusNotFound)
		}
	}
	endpoint := fakeIMDS(f, map[string]func(http.ResponseWriter){PathInstanceAction: serve(&action), PathRebalance: serve(&rebalance)})
	// NewMetadataClient's settings, but not the SDK's one-second header
	// timeout, which is for a local service on an idle host: a machine
	// running fuzz workers on every core is not one (a slow answer once in
	// thousands failed the target).
	client := imds.New(imds.Options{Endpoint: endpoint, ClientEnableState: imds.ClientEnabled, Retryer: aws.NopRetryer{},
		HTTPClient: &http.Client{Timeout: 30 * time.Second}})
	f.Fuzz(func(t *testing.T, actionBody, rebalanceBody string) {
		action.Store(&actionBody)
		rebalance.Store(&rebalanceBody)
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		obs, _, err := Poll(ctx, client, now)
		if err != nil {
			t.Fatalf("Poll failed on a reachable metadata service: %v", err)
		}
		if (actionBody != "") != (obs.Interruption != nil) {
			t.Errorf("instance action served: %v; interruption reported: %v", actionBody != "", obs.Interruption != nil)
		}
		if obs.Interruption != nil && (obs.Interruption.Time.IsZero() || (obs.Interruption.Guessed && !obs.Interruption.Time.Equal(now.Add(2*time.Minute)))) {
			t.Errorf("interruption time %s (guessed %v)", obs.Interruption.Time, obs.Interruption.Guessed)
		}
		if (rebalanceBody != "") != (obs.RebalanceSince != nil) {
			t.Errorf("rebalance served: %v; reported: %v", rebalanceBody != "", obs.RebalanceSince != nil)
		}
	})
}
