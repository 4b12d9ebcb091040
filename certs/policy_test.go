package certs

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

var names = DNSNames("spot-rebalancer-webhook", "spot-rebalancer", []string{"127.0.0.1"})

// world is what the API server holds: the two Secrets and the caBundle of
// every webhook (two configurations with one webhook each).
type world struct {
	t           *testing.T
	caData      map[string][]byte
	publishedAt time.Time
	serving     map[string][]byte
	bundles     [][]byte
	settle      time.Duration
	caValidity  time.Duration
	srvValidity time.Duration
	issued      int
	caCreated   int
}

func newWorld(t *testing.T, caValidity, servingValidity time.Duration) *world {
	return &world{t: t, bundles: [][]byte{nil, nil}, settle: 5 * time.Second, caValidity: caValidity, srvValidity: servingValidity}
}

func (w *world) input(now time.Time) Input {
	return Input{Now: now, CAData: w.caData, PublishedAt: w.publishedAt, ServingData: w.serving, Bundles: w.bundles,
		DNSNames: names, CAValidity: w.caValidity, ServingValidity: w.srvValidity, Settle: w.settle}
}

// apply carries a plan out in the rotator's order and checks the rule that
// makes rotation safe: a new serving certificate's CA is already in every
// published bundle, unless nothing verified before anyway.
func (w *world) apply(now time.Time, p *Plan) {
	t := w.t
	t.Helper()
	if p.CAData != nil {
		w.caData = p.CAData
		w.caCreated++
	}
	if p.ClearPublishedAt {
		w.publishedAt = time.Time{}
	}
	if !p.PublishedAt.IsZero() {
		w.publishedAt = p.PublishedAt
	}
	servedBefore := w.servedVerifies(now)
	if p.WriteBundle {
		for i := range w.bundles {
			w.bundles[i] = p.Bundle
		}
	}
	if p.ServingData != nil {
		newCert := !bytes.Equal(p.ServingData[TLSCertKey], w.serving[TLSCertKey])
		if newCert && servedBefore {
			kp, err := ParseKeyPair(p.ServingData[TLSCertKey], p.ServingData[TLSKeyKey])
			if err != nil {
				t.Fatalf("%s: issued an unparseable certificate: %v", now, err)
			}
			for i, b := range w.bundles {
				roots, _ := ParseCertificates(b)
				if err := Verify(kp.Cert, roots, names, now); err != nil {
					t.Fatalf("%s: issued a serving certificate that webhook %d's bundle does not verify: %v", now, i, err)
				}
			}
			if w.publishedAt.IsZero() || now.Before(w.publishedAt.Add(w.settle)) {
				t.Fatalf("%s: replaced a working certificate before the bundle was published and settled (published %s)", now, w.publishedAt)
			}
		}
		if newCert {
			w.issued++
		}
		w.serving = p.ServingData
	}
}

func (w *world) servedVerifies(at time.Time) bool {
	return w.checkServed(at) == nil
}

func (w *world) checkServed(at time.Time) error {
	kp, err := ParseKeyPair(w.serving[TLSCertKey], w.serving[TLSKeyKey])
	if err != nil {
		return err
	}
	for _, b := range w.bundles {
		roots, err := ParseCertificates(b)
		if err != nil {
			return err
		}
		if err := Verify(kp.Cert, roots, names, at); err != nil {
			return err
		}
	}
	return nil
}

// reconcile runs Decide and applies its plans until nothing is left to do
// now, as the rotator's requeues would, and returns when to wake next.
func (w *world) reconcile(now time.Time) time.Time {
	w.t.Helper()
	for range 10 {
		p, err := Decide(w.input(now))
		if err != nil {
			w.t.Fatalf("%s: %v", now, err)
		}
		if p.Empty() {
			return p.RecheckAt
		}
		w.apply(now, p)
	}
	w.t.Fatalf("%s: no fixed point after 10 plans", now)
	return time.Time{}
}

func TestRotationNeverLeavesAGap(t *testing.T) {
	tests := map[string]struct {
		caValidity, servingValidity, step time.Duration
		wantCARenewals                    int
		// deleteCAAt, when set, deletes the CA Secret that long in.
		deleteCAAt time.Duration
	}{
		"the CA Secret deleted by hand 100 days in: the webhooks' CA stays in the bundle until the new one is served": {
			caValidity: 365 * 24 * time.Hour, servingValidity: 90 * 24 * time.Hour, step: 24 * time.Hour, wantCARenewals: 1,
			deleteCAAt: 100 * 24 * time.Hour,
		},
		"the defaults, 1 year CA and 90 day serving certificates, over two years": {
			caValidity: 365 * 24 * time.Hour, servingValidity: 90 * 24 * time.Hour, step: 24 * time.Hour, wantCARenewals: 1,
		},
		"a serving lifetime close to the CA's, so serving certificates are cut short by CA expiry": {
			caValidity: 30 * 24 * time.Hour, servingValidity: 25 * 24 * time.Hour, step: 12 * time.Hour, wantCARenewals: 20,
		},
		"minutes-long lifetimes as in the end-to-end test": {
			caValidity: 90 * time.Second, servingValidity: 40 * time.Second, step: 3 * time.Second, wantCARenewals: 0,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, tc.caValidity, tc.servingValidity)
			start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
			end := start.Add(2 * 365 * 24 * time.Hour)
			if tc.caValidity < time.Hour {
				end = start.Add(20 * time.Minute)
			}
			now := start
			deleted := false
			next := w.reconcile(now)
			if err := w.checkServed(now); err != nil {
				t.Fatalf("after the first reconcile nothing verifies: %v", err)
			}
			for now.Before(end) {
				// Wake at the next step, or earlier when the plan asked to.
				now = now.Add(tc.step)
				if next.Before(now) {
					now = next
				}
				if err := w.checkServed(now); err != nil {
					t.Fatalf("%s (%s in): the served certificate does not verify before the rotator acts: %v", now, now.Sub(start), err)
				}
				if tc.deleteCAAt > 0 && !now.Before(start.Add(tc.deleteCAAt)) && !deleted {
					w.caData, w.publishedAt, deleted = nil, time.Time{}, true
				}
				next = w.reconcile(now)
				if err := w.checkServed(now); err != nil {
					t.Fatalf("%s (%s in): the served certificate does not verify after the rotator acted: %v", now, now.Sub(start), err)
				}
				if !next.After(now) {
					t.Fatalf("%s: recheck time %s is not in the future", now, next)
				}
			}
			if tc.wantCARenewals > 0 && w.caCreated-1 < tc.wantCARenewals {
				t.Errorf("CA written %d times, want at least %d renewals", w.caCreated, tc.wantCARenewals)
			}
			minIssued := int(end.Sub(start) / tc.servingValidity)
			if w.issued < minIssued {
				t.Errorf("issued %d serving certificates, want at least %d", w.issued, minIssued)
			}
			t.Logf("CA written %d times, %d serving certificates issued", w.caCreated, w.issued)
		})
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	healthy := func(t *testing.T) *world {
		w := newWorld(t, 365*24*time.Hour, 90*24*time.Hour)
		w.reconcile(now)
		return w
	}
	otherCA, err := NewCA(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherNames, err := NewServing(otherCA, []string{"someone-else.example"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		mutate     func(w *world)
		at         time.Duration
		wantEvents []string
		check      func(t *testing.T, w *world, p *Plan)
	}{
		"a healthy state needs nothing": {
			mutate: func(*world) {},
			check: func(t *testing.T, _ *world, p *Plan) {
				if !p.Empty() {
					t.Errorf("plan is not empty: %+v", p)
				}
			},
		},
		"garbage PEM in the serving Secret is replaced with a warning": {
			mutate: func(w *world) {
				w.serving = map[string][]byte{TLSCertKey: []byte("garbage"), TLSKeyKey: []byte("garbage")}
			},
			wantEvents: []string{"Warning ServingCertificateIssued", "unusable"},
		},
		"a key that does not match the certificate is replaced": {
			mutate: func(w *world) {
				w.serving = map[string][]byte{TLSCertKey: w.serving[TLSCertKey], TLSKeyKey: otherNames.KeyPEM, BundleKey: w.serving[BundleKey]}
			},
			wantEvents: []string{"does not match"},
		},
		"a certificate for other names is replaced": {
			mutate: func(w *world) {
				w.serving = map[string][]byte{TLSCertKey: otherNames.CertPEM, TLSKeyKey: otherNames.KeyPEM, BundleKey: w.serving[BundleKey]}
			},
			wantEvents: []string{"not valid for the current CA"},
		},
		"a CA Secret with garbage is replaced; the CA the webhooks carry stays in the bundle and the serving certificate waits": {
			mutate:     func(w *world) { w.caData = map[string][]byte{CACertKey: []byte("x"), CAKeyKey: []byte("y")} },
			wantEvents: []string{"Warning CAUpdated", "unusable CA", "holds 2 CA certificate(s)"},
			check: func(t *testing.T, w *world, p *Plan) {
				if p.CAData == nil || p.CAData[PreviousCAKey] == nil || !p.WriteBundle || p.ServingData != nil {
					t.Errorf("want a new CA keeping the webhooks' CA as previous, a bundle write and no new serving certificate yet; got %+v", p)
				}
			},
		},
		"a deleted CA Secret: the CA the webhooks carry stays in the bundle and the serving certificate waits": {
			mutate:     func(w *world) { w.caData, w.publishedAt = nil, time.Time{} },
			wantEvents: []string{"CAUpdated", "created a CA", "holds 2 CA certificate(s)"},
			check: func(t *testing.T, w *world, p *Plan) {
				if p.CAData == nil || p.CAData[PreviousCAKey] == nil || !p.WriteBundle || p.ServingData != nil {
					t.Errorf("want a new CA keeping the webhooks' CA as previous, a bundle write and no new serving certificate yet; got %+v", p)
				}
			},
		},
		"a caBundle emptied by someone re-applying the configuration is written again": {
			mutate: func(w *world) { w.bundles[1] = nil },
			check: func(t *testing.T, w *world, p *Plan) {
				if !p.WriteBundle || p.CAData != nil || p.ServingData != nil {
					t.Errorf("want only a bundle write, got %+v", p)
				}
			},
		},
		"a CA due for renewal is renewed, the old one stays in the bundle, and the serving certificate waits": {
			// The CA (1 year) is due after 243.3 days; the serving
			// certificate was renewed the day before and still works.
			mutate: func(w *world) { w.reconcile(now.Add(243 * 24 * time.Hour)) },
			at:     244 * 24 * time.Hour,
			check: func(t *testing.T, w *world, p *Plan) {
				if p.CAData == nil || p.CAData[PreviousCAKey] == nil {
					t.Fatal("want a new CA with the old one kept as previous")
				}
				roots, err := ParseCertificates(p.Bundle)
				if err != nil || len(roots) != 2 {
					t.Fatalf("bundle = %d certificates (%v), want 2", len(roots), err)
				}
				if p.ServingData != nil && !bytes.Equal(p.ServingData[TLSCertKey], w.serving[TLSCertKey]) {
					t.Error("a serving certificate from the new CA was issued before the bundle was published")
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := healthy(t)
			if tc.mutate != nil {
				tc.mutate(w)
			}
			p, err := Decide(w.input(now.Add(tc.at)))
			if err != nil {
				t.Fatal(err)
			}
			var events []string
			for _, e := range p.Events {
				kind := "Normal"
				if e.Warning {
					kind = "Warning"
				}
				events = append(events, kind+" "+e.Reason+": "+e.Message)
			}
			all := strings.Join(events, "\n")
			for _, want := range tc.wantEvents {
				if !strings.Contains(all, want) {
					t.Errorf("events do not contain %q:\n%s", want, all)
				}
			}
			if tc.check != nil {
				tc.check(t, w, p)
			}
			// Whatever happened, carrying the plans out heals the state.
			w.reconcile(now.Add(tc.at))
			w.reconcile(now.Add(tc.at + w.settle))
			if err := w.checkServed(now.Add(tc.at + w.settle)); err != nil {
				t.Errorf("not healed: %v", err)
			}
		})
	}
}

func TestParseKeyPairRejectsMismatch(t *testing.T) {
	now := time.Now()
	a, _ := NewCA(now, time.Hour)
	b, _ := NewCA(now, time.Hour)
	if _, err := ParseKeyPair(a.CertPEM, b.KeyPEM); err == nil {
		t.Fatal("want an error for a key of another certificate")
	}
	kp, err := ParseKeyPair(a.CertPEM, a.KeyPEM)
	if err != nil || !kp.Cert.Equal(a.Cert) {
		t.Fatalf("round trip failed: %v", err)
	}
}
