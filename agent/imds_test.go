package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeIMDS speaks the IMDSv2 wire protocol: a token from PUT /latest/api/token,
// then GETs under /latest/meta-data/ that must carry it.
func fakeIMDS(t testing.TB, answers map[string]func(w http.ResponseWriter)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			_, _ = w.Write([]byte("token"))
			return
		}
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != "token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if answer, ok := answers[strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")]; ok {
			answer(w)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func body(s string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { _, _ = w.Write([]byte(s)) }
}

func TestPoll(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		answers          map[string]func(w http.ResponseWriter)
		wantInterruption *Interruption
		wantRebalance    bool
		wantWarnings     int
		wantErr          bool
	}{
		"404 on both paths means no event": {},
		"an instance action is an interruption at its time": {
			answers:          map[string]func(http.ResponseWriter){PathInstanceAction: body(`{"action":"terminate","time":"2026-11-26T12:02:00Z"}`)},
			wantInterruption: &Interruption{Action: "terminate", Time: now.Add(2 * time.Minute)},
		},
		"a zero time is no time: the two minutes AWS promises": {
			answers:          map[string]func(http.ResponseWriter){PathInstanceAction: body(`{"action":"terminate","time":"0001-01-01T00:00:00Z"}`)},
			wantInterruption: &Interruption{Action: "terminate", Time: now.Add(2 * time.Minute), Guessed: true},
		},
		"a rebalance recommendation alone": {
			answers:       map[string]func(http.ResponseWriter){PathRebalance: body(`{"noticeTime":"2026-11-26T11:59:00Z"}`)},
			wantRebalance: true,
		},
		"a malformed instance action still counts, with the two minutes AWS promises": {
			answers:          map[string]func(http.ResponseWriter){PathInstanceAction: body(`<html>oops</html>`)},
			wantInterruption: &Interruption{Time: now.Add(2 * time.Minute), Guessed: true},
			wantWarnings:     1,
		},
		"an instance action without a usable time is assumed two minutes out": {
			answers:          map[string]func(http.ResponseWriter){PathInstanceAction: body(`{"action":"stop","time":"soon"}`)},
			wantInterruption: &Interruption{Action: "stop", Time: now.Add(2 * time.Minute), Guessed: true},
		},
		"a 500 is an error to retry, not an event": {
			answers: map[string]func(http.ResponseWriter){PathInstanceAction: func(w http.ResponseWriter) {
				http.Error(w, "boom", http.StatusInternalServerError)
			}},
			wantErr: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := NewMetadataClient(fakeIMDS(t, tc.answers))
			obs, warnings, err := Poll(t.Context(), c, now)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(warnings) != tc.wantWarnings {
				t.Errorf("warnings = %v, want %d", warnings, tc.wantWarnings)
			}
			switch {
			case tc.wantInterruption == nil && obs.Interruption != nil:
				t.Errorf("unexpected interruption %+v", obs.Interruption)
			case tc.wantInterruption != nil && (obs.Interruption == nil || *obs.Interruption != *tc.wantInterruption):
				t.Errorf("interruption = %+v, want %+v", obs.Interruption, tc.wantInterruption)
			}
			if (obs.RebalanceSince != nil) != tc.wantRebalance {
				t.Errorf("rebalance = %v, want %v", obs.RebalanceSince, tc.wantRebalance)
			}
		})
	}
}

func TestPollUnreachable(t *testing.T) {
	c := NewMetadataClient("http://127.0.0.1:1") // nothing listens on port 1
	if _, _, err := Poll(t.Context(), c, time.Now()); err == nil {
		t.Fatal("an unreachable metadata service must be an error")
	}
}
