package certs

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// Keys of the two Secrets.
const (
	// CA Secret: the current CA and its key, and older CA certificates kept
	// in the bundle until they expire.
	CACertKey     = "ca.crt"
	CAKeyKey      = "ca.key"
	PreviousCAKey = "previous.crt"
	// Serving Secret: what webhook replicas serve, and the bundle that was
	// published for it.
	TLSCertKey = "tls.crt"
	TLSKeyKey  = "tls.key"
	BundleKey  = "ca.crt"

	// PublishedAtAnnotation on the CA Secret records when every
	// MutatingWebhookConfiguration was first seen holding the current CA.
	PublishedAtAnnotation = "spot-rebalancer.io/bundle-published-at"
)

// Input is everything the rotator observed, and the time it looks at.
type Input struct {
	Now time.Time
	// CAData is the CA Secret's data; nil when the Secret does not exist.
	CAData map[string][]byte
	// PublishedAt is the CA Secret's PublishedAtAnnotation, zero if unset.
	PublishedAt time.Time
	// ServingData is the serving Secret's data; nil when it does not exist.
	ServingData map[string][]byte
	// Bundles are the caBundles of every webhook of every configured
	// MutatingWebhookConfiguration that exists.
	Bundles [][]byte

	DNSNames        []string
	CAValidity      time.Duration
	ServingValidity time.Duration
	// Settle is how long a bundle must have been published before a
	// certificate that needs it replaces one that works: the API server
	// picks up webhook configuration changes asynchronously.
	Settle time.Duration
}

// Plan is what the rotator must write, in this order: the CA Secret, the
// bundle into every webhook that lacks it, the serving Secret.
type Plan struct {
	// CAData, when not nil, replaces the CA Secret's data.
	CAData map[string][]byte
	// PublishedAt, when not zero, is written to the CA Secret's annotation;
	// ClearPublishedAt removes it (a new CA is not published yet).
	PublishedAt      time.Time
	ClearPublishedAt bool
	// Bundle is the CA bundle every webhook must carry; WriteBundle says
	// whether at least one does not yet.
	Bundle      []byte
	WriteBundle bool
	// ServingData, when not nil, replaces the serving Secret's data.
	ServingData map[string][]byte
	// Events explain the plan: one line per decision, for Events and logs.
	Events []Event
	// RecheckAt is when the plan may change with no other change: the next
	// renewal, expiry or end of a settle wait.
	RecheckAt time.Time
}

// Event is a decision worth an Event on the Secret.
type Event struct {
	Warning bool
	Reason  string
	Message string
}

// Empty tells whether the plan writes nothing.
func (p *Plan) Empty() bool {
	return p.CAData == nil && p.PublishedAt.IsZero() && !p.ClearPublishedAt && !p.WriteBundle && p.ServingData == nil
}

// Decide returns what to write so that the served certificate always
// verifies against the published bundle:
//   - the CA is replaced when missing, broken or due for renewal; the old
//     CA certificate stays in the bundle until it expires;
//   - the bundle is written into every webhook that lacks it;
//   - a serving certificate from a new CA is issued only once every webhook
//     holds that CA and Settle has passed, unless the current serving
//     certificate is broken anyway.
func Decide(in Input) (*Plan, error) {
	p := &Plan{}
	recheck := func(t time.Time) {
		if p.RecheckAt.IsZero() || t.Before(p.RecheckAt) {
			p.RecheckAt = t
		}
	}

	ca, previous, err := decideCA(in, p)
	if err != nil {
		return nil, err
	}
	recheck(RenewalTime(ca.Cert))
	for _, c := range previous {
		recheck(c.NotAfter)
	}

	roots := append([]*x509.Certificate{ca.Cert}, previous...)
	p.Bundle = EncodeCertificates(roots)
	bundlePublished := true
	for _, b := range in.Bundles {
		if !bytes.Equal(b, p.Bundle) {
			p.WriteBundle = true
		}
		if !containsCert(b, ca.Cert) {
			bundlePublished = false
		}
	}
	publishedAt := in.PublishedAt
	switch {
	case p.CAData != nil:
		publishedAt = time.Time{}
		p.ClearPublishedAt = !in.PublishedAt.IsZero()
	case bundlePublished && publishedAt.IsZero():
		publishedAt = in.Now
		p.PublishedAt = in.Now
	}

	serving, servingErr := parseServing(in.ServingData)
	renew := ""
	switch {
	case servingErr != nil:
		renew = servingErr.Error()
	case Verify(serving.Cert, []*x509.Certificate{ca.Cert}, in.DNSNames, in.Now) != nil:
		// Not from the current CA (or names or validity changed).
		renew = "not valid for the current CA, names and time"
	case DueForRenewal(serving.Cert, in.Now):
		renew = "due for renewal"
	default:
		recheck(RenewalTime(serving.Cert))
	}
	if renew == "" {
		p.refreshServingBundle(in.ServingData)
		return p, nil
	}
	working := servingErr == nil && Verify(serving.Cert, roots, in.DNSNames, in.Now) == nil
	if working {
		if publishedAt.IsZero() {
			// Wait for the bundle to be written and observed.
			return p, nil
		}
		if ready := publishedAt.Add(in.Settle); in.Now.Before(ready) {
			recheck(ready)
			return p, nil
		}
	}
	kp, err := NewServing(ca, in.DNSNames, in.Now, in.ServingValidity)
	if err != nil {
		return nil, fmt.Errorf("issuing serving certificate: %w", err)
	}
	p.ServingData = map[string][]byte{TLSCertKey: kp.CertPEM, TLSKeyKey: kp.KeyPEM, BundleKey: p.Bundle}
	p.Events = append(p.Events, Event{Warning: servingErr != nil && in.ServingData != nil, Reason: "ServingCertificateIssued",
		Message: fmt.Sprintf("issued a serving certificate valid until %s: the previous one was %s", kp.Cert.NotAfter.UTC().Format(time.RFC3339), renew)})
	recheck(RenewalTime(kp.Cert))
	return p, nil
}

// decideCA returns the CA to sign with and the older CA certificates that
// stay in the bundle, and records in p whether the CA Secret changes.
func decideCA(in Input, p *Plan) (*KeyPair, []*x509.Certificate, error) {
	var previous []*x509.Certificate
	if data := in.CAData[PreviousCAKey]; len(data) > 0 {
		certs, err := ParseCertificates(data)
		if err != nil {
			p.Events = append(p.Events, Event{Warning: true, Reason: "CABundleRepaired",
				Message: fmt.Sprintf("dropped unreadable previous CA certificates: %v", err)})
		}
		previous = certs
	}
	ca, err := ParseKeyPair(in.CAData[CACertKey], in.CAData[CAKeyKey])
	// lost: the CA Secret is gone or broken, not merely due for renewal.
	reason, warn, lost := "", false, false
	switch {
	case in.CAData == nil:
		reason, lost = "created a CA", true
	case err != nil:
		reason, warn, lost = "replaced an unusable CA ("+err.Error()+")", true, true
	case !ca.Cert.IsCA:
		reason, warn, lost = "replaced a CA certificate that is not a CA", true, true
	case DueForRenewal(ca.Cert, in.Now):
		reason = "renewed the CA"
	}
	if lost {
		// The CA Secret is gone or broken (deleted by hand, lost, edited)
		// while webhooks may carry the CA that signed what is served now:
		// those CAs stay in the bundle until a certificate of the new CA is
		// served, as an old CA does after a renewal. Dropping them would
		// leave the API server trusting nothing the webhook serves in
		// between, and pods admitted unmutated.
		for _, c := range bundleCAs(in.Bundles, in.Now) {
			if !slices.ContainsFunc(previous, c.Equal) {
				previous = append(previous, c)
			}
		}
	}
	if reason != "" {
		// The old CA may have signed what is served right now: it stays in
		// the bundle until it expires.
		if old, err := ParseCertificates(in.CAData[CACertKey]); err == nil && old[0].IsCA {
			previous = append([]*x509.Certificate{old[0]}, previous...)
		}
	}
	var kept []*x509.Certificate
	for _, c := range previous {
		if in.Now.Before(c.NotAfter) {
			kept = append(kept, c)
		}
	}
	switch {
	case reason != "":
		if ca, err = NewCA(in.Now, in.CAValidity); err != nil {
			return nil, nil, fmt.Errorf("creating CA: %w", err)
		}
	case len(kept) != len(previous):
		reason = "dropped expired CA certificates"
	default:
		return ca, previous, nil
	}
	p.CAData = map[string][]byte{CACertKey: ca.CertPEM, CAKeyKey: ca.KeyPEM}
	if len(kept) > 0 {
		p.CAData[PreviousCAKey] = EncodeCertificates(kept)
	}
	p.Events = append(p.Events, Event{Warning: warn, Reason: "CAUpdated",
		Message: fmt.Sprintf("%s; the bundle holds %d CA certificate(s)", reason, 1+len(kept))})
	return ca, kept, nil
}

func parseServing(data map[string][]byte) (*KeyPair, error) {
	if data == nil {
		return nil, fmt.Errorf("missing")
	}
	kp, err := ParseKeyPair(data[TLSCertKey], data[TLSKeyKey])
	if err != nil {
		return nil, fmt.Errorf("unusable (%v)", err)
	}
	return kp, nil
}

// refreshServingBundle keeps the serving Secret's copy of the bundle
// current when the certificate itself needs nothing.
func (p *Plan) refreshServingBundle(data map[string][]byte) {
	if bytes.Equal(data[BundleKey], p.Bundle) {
		return
	}
	p.ServingData = map[string][]byte{TLSCertKey: data[TLSCertKey], TLSKeyKey: data[TLSKeyKey], BundleKey: p.Bundle}
}

// bundleCAs are the distinct CA certificates, not yet expired, in the
// webhooks' bundles.
func bundleCAs(bundles [][]byte, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, b := range bundles {
		certs, err := ParseCertificates(b)
		if err != nil {
			continue
		}
		for _, c := range certs {
			if c.IsCA && now.Before(c.NotAfter) && !slices.ContainsFunc(out, c.Equal) {
				out = append(out, c)
			}
		}
	}
	return out
}

func containsCert(bundle []byte, cert *x509.Certificate) bool {
	certs, err := ParseCertificates(bundle)
	if err != nil {
		return false
	}
	for _, c := range certs {
		if c.Equal(cert) {
			return true
		}
	}
	return false
}
