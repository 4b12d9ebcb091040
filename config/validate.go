package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ProfileNone is the pod annotation value that opts a pod out; no profile
// may take the name.
const ProfileNone = "none"

// Validate reports every invalid field, each named by its path in the file
// and, where the choice is closed, the allowed values.
func (c *Config) Validate() error {
	var errs field.ErrorList
	if c.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), c.APIVersion, []string{APIVersion}))
	}
	if c.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), c.Kind, []string{Kind}))
	}
	errs = append(errs, c.Webhook.validate(field.NewPath("webhook"))...)
	errs = append(errs, c.Certs.validate(field.NewPath("certs"))...)
	errs = append(errs, c.Rebalancer.validate(field.NewPath("rebalancer"))...)
	errs = append(errs, positive(field.NewPath("agent", "pollInterval"), c.Agent.PollInterval)...)
	errs = append(errs, optionalURL(field.NewPath("agent", "imdsEndpoint"), c.Agent.IMDSEndpoint)...)
	errs = append(errs, c.AWS.validate(field.NewPath("aws"))...)
	return errs.ToAggregate()
}

func (w *Webhook) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if w.Port < 1 || w.Port > 65535 {
		errs = append(errs, field.Invalid(p.Child("port"), w.Port, "must be between 1 and 65535"))
	}
	errs = append(errs, dnsLabel(p.Child("namespace"), w.Namespace)...)
	for i, ns := range w.ExcludedNamespaces {
		errs = append(errs, dnsLabel(p.Child("excludedNamespaces").Index(i), ns)...)
	}
	for name, prof := range w.Profiles {
		pp := p.Child("profiles").Key(name)
		if msgs := validation.IsValidLabelValue(name); len(msgs) > 0 || name == "" {
			errs = append(errs, field.Invalid(pp, name, "a profile name must be a non-empty label value"))
		}
		if name == ProfileNone {
			errs = append(errs, field.Invalid(pp, name, "reserved: pods use it to opt out"))
		}
		errs = append(errs, prof.validate(pp)...)
	}
	return errs
}

var (
	tolerationOps = []string{string(corev1.TolerationOpExists), string(corev1.TolerationOpEqual)}
	taintEffects  = []string{"", string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}
	selectorOps   = []string{string(corev1.NodeSelectorOpIn), string(corev1.NodeSelectorOpNotIn), string(corev1.NodeSelectorOpExists),
		string(corev1.NodeSelectorOpDoesNotExist), string(corev1.NodeSelectorOpGt), string(corev1.NodeSelectorOpLt)}
)

func (prof *Profile) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, t := range prof.Tolerations {
		tp := p.Child("tolerations").Index(i)
		op := string(t.Operator)
		if op == "" {
			op = string(corev1.TolerationOpEqual)
		}
		if !sets.New(tolerationOps...).Has(op) {
			errs = append(errs, field.NotSupported(tp.Child("operator"), t.Operator, tolerationOps))
		}
		if t.Key == "" && op != string(corev1.TolerationOpExists) {
			errs = append(errs, field.Invalid(tp.Child("key"), t.Key, "an empty key needs operator Exists"))
		}
		if t.Key != "" {
			errs = append(errs, qualifiedName(tp.Child("key"), t.Key)...)
		}
		if op == string(corev1.TolerationOpExists) && t.Value != "" {
			errs = append(errs, field.Invalid(tp.Child("value"), t.Value, "must be empty when operator is Exists"))
		}
		if !sets.New(taintEffects...).Has(string(t.Effect)) {
			errs = append(errs, field.NotSupported(tp.Child("effect"), t.Effect, taintEffects[1:]))
		}
	}
	for i, term := range prof.PreferredAffinity {
		tp := p.Child("preferredAffinity").Index(i)
		if term.Weight < 1 || term.Weight > 100 {
			errs = append(errs, field.Invalid(tp.Child("weight"), term.Weight, "must be between 1 and 100"))
		}
		if len(term.Preference.MatchExpressions)+len(term.Preference.MatchFields) == 0 {
			errs = append(errs, field.Required(tp.Child("preference"), "a term needs at least one matchExpression"))
		}
		for j, req := range term.Preference.MatchExpressions {
			rp := tp.Child("preference", "matchExpressions").Index(j)
			errs = append(errs, qualifiedName(rp.Child("key"), req.Key)...)
			if !sets.New(selectorOps...).Has(string(req.Operator)) {
				errs = append(errs, field.NotSupported(rp.Child("operator"), req.Operator, selectorOps))
			}
		}
	}
	seen := sets.New[string]()
	for i, s := range prof.Spread {
		sp := p.Child("spread").Index(i)
		errs = append(errs, qualifiedName(sp.Child("topologyKey"), s.TopologyKey)...)
		if seen.Has(s.TopologyKey) {
			errs = append(errs, field.Duplicate(sp.Child("topologyKey"), s.TopologyKey))
		}
		seen.Insert(s.TopologyKey)
		if s.MaxSkew < 1 {
			errs = append(errs, field.Invalid(sp.Child("maxSkew"), s.MaxSkew, "must be at least 1"))
		}
	}
	return errs
}

var certModes = []string{string(CertModeSelfManaged), string(CertModeExternal)}

func (cs *Certs) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !sets.New(certModes...).Has(string(cs.Mode)) {
		errs = append(errs, field.NotSupported(p.Child("mode"), cs.Mode, certModes))
	}
	errs = append(errs, dnsLabel(p.Child("serviceName"), cs.ServiceName)...)
	for i, n := range cs.ExtraDNSNames {
		if net.ParseIP(n) == nil && len(validation.IsDNS1123Subdomain(n)) > 0 && len(validation.IsWildcardDNS1123Subdomain(n)) > 0 {
			errs = append(errs, field.Invalid(p.Child("extraDNSNames").Index(i), n, "must be a DNS name or an IP address"))
		}
	}
	errs = append(errs, dnsSubdomain(p.Child("caSecretName"), cs.CASecretName)...)
	errs = append(errs, dnsSubdomain(p.Child("servingSecretName"), cs.ServingSecretName)...)
	if cs.CASecretName == cs.ServingSecretName {
		errs = append(errs, field.Invalid(p.Child("servingSecretName"), cs.ServingSecretName,
			"must differ from caSecretName: webhook replicas must not be able to read the CA key"))
	}
	if len(cs.WebhookConfigurations) == 0 {
		errs = append(errs, field.Required(p.Child("webhookConfigurations"), "name at least one MutatingWebhookConfiguration"))
	}
	for i, n := range cs.WebhookConfigurations {
		errs = append(errs, dnsSubdomain(p.Child("webhookConfigurations").Index(i), n)...)
	}
	errs = append(errs, positive(p.Child("caValidity"), cs.CAValidity)...)
	errs = append(errs, positive(p.Child("servingValidity"), cs.ServingValidity)...)
	if cs.ServingValidity.Duration > cs.CAValidity.Duration {
		errs = append(errs, field.Invalid(p.Child("servingValidity"), cs.ServingValidity.Duration.String(),
			fmt.Sprintf("must not exceed caValidity (%s)", cs.CAValidity.Duration)))
	}
	if cs.Mode == CertModeExternal && cs.CertDir == "" {
		errs = append(errs, field.Required(p.Child("certDir"), "external mode serves tls.crt and tls.key from this directory"))
	}
	return errs
}

var (
	replacementModes = []string{string(ReplacementNode), string(ReplacementCapacity), string(ReplacementNone)}
	retires          = []string{string(RetireAuto), string(RetireNone)}
	provisions       = []string{string(ProvisionReservations), string(ProvisionASG), string(ProvisionNone)}
	onTimeouts       = []string{string(OnTimeoutDrainIfFits), string(OnTimeoutKeepCordoned), string(OnTimeoutUncordon)}
)

func (r *Rebalancer) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(r.PoolLabels) == 0 {
		errs = append(errs, field.Required(p.Child("poolLabels"), "name at least one label"))
	}
	for i, l := range r.PoolLabels {
		errs = append(errs, qualifiedName(p.Child("poolLabels").Index(i), l)...)
	}
	rp := p.Child("replacement")
	if !sets.New(replacementModes...).Has(string(r.Replacement.Mode)) {
		errs = append(errs, field.NotSupported(rp.Child("mode"), r.Replacement.Mode, replacementModes))
	}
	errs = append(errs, positive(rp.Child("timeout"), r.Replacement.Timeout)...)
	if !sets.New(onTimeouts...).Has(string(r.Replacement.OnTimeout)) {
		errs = append(errs, field.NotSupported(rp.Child("onTimeout"), r.Replacement.OnTimeout, onTimeouts))
	}
	if !sets.New(retires...).Has(string(r.Retire)) {
		errs = append(errs, field.NotSupported(p.Child("retire"), r.Retire, retires))
	}
	if !sets.New(provisions...).Has(string(r.Replacement.Provision)) {
		errs = append(errs, field.NotSupported(rp.Child("provision"), r.Replacement.Provision, provisions))
	}
	if img := r.Replacement.ReservationImage; img == "" || strings.ContainsFunc(img, unicode.IsSpace) {
		errs = append(errs, field.Invalid(rp.Child("reservationImage"), img, "must be an image reference such as "+DefaultReservationImage))
	}
	// An interruption notice gives two minutes; a safety margin that eats
	// all of it leaves nothing to drain in.
	if d := r.DeadlineSafety.Duration; d < 0 || d >= 2*time.Minute {
		errs = append(errs, field.Invalid(p.Child("deadlineSafety"), d.String(), "must be at least 0s and less than 2m"))
	}
	// A grace period under MinGraceAtDeadline is raised to it anyway; one
	// of the whole notice would delete every pod the moment it arrives.
	if d := r.MaxGraceAtDeadline.Duration; d < MinGraceAtDeadline || d >= 2*time.Minute {
		errs = append(errs, field.Invalid(p.Child("maxGraceAtDeadline"), d.String(), "must be at least "+MinGraceAtDeadline.String()+" and less than 2m"))
	}
	errs = append(errs, validateBudget(p.Child("implicitBudget", "maxUnavailable"), r.ImplicitBudget.MaxUnavailable)...)
	if r.MaxConcurrentNodes < 1 {
		errs = append(errs, field.Invalid(p.Child("maxConcurrentNodes"), r.MaxConcurrentNodes, "must be at least 1"))
	}
	if r.MaxParallelEvictions < 1 {
		errs = append(errs, field.Invalid(p.Child("maxParallelEvictions"), r.MaxParallelEvictions, "must be at least 1"))
	}
	errs = append(errs, positive(p.Child("surge", "timeout"), r.Surge.Timeout)...)
	return errs
}

func validateBudget(p *field.Path, v *intstr.IntOrString) field.ErrorList {
	if v == nil {
		return field.ErrorList{field.Required(p, "")}
	}
	if v.Type == intstr.Int {
		if v.IntVal < 1 {
			return field.ErrorList{field.Invalid(p, v.IntVal, "must be at least 1 or a percentage")}
		}
		return nil
	}
	pct, err := intstr.GetScaledValueFromIntOrPercent(v, 100, false)
	if err != nil || pct < 1 || pct > 100 || v.StrVal[len(v.StrVal)-1] != '%' {
		return field.ErrorList{field.Invalid(p, v.StrVal, "must be an integer of at least 1 or a percentage from 1% to 100%")}
	}
	return nil
}

func (a *AWS) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, optionalURL(p.Child("endpoint"), a.Endpoint)...)
	errs = append(errs, optionalURL(p.Child("queue", "url"), a.Queue.URL)...)
	for i, acct := range a.Queue.Accounts {
		if !awsAccount.MatchString(acct) {
			errs = append(errs, field.Invalid(p.Child("queue", "accounts").Index(i), acct, "must be a 12-digit AWS account id"))
		}
	}
	if a.Queue.URL != "" && len(a.Queue.BelievedAccounts()) == 0 {
		errs = append(errs, field.Required(p.Child("queue", "accounts"),
			"the queue URL names no account (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME): list the accounts whose events to believe"))
	}
	if a.EC2.DescribeInstances || a.EC2.PollSpotRequests {
		if a.EC2.Interval.Duration < time.Second {
			errs = append(errs, field.Invalid(p.Child("ec2", "interval"), a.EC2.Interval.Duration.String(), "must be at least 1s"))
		}
	}
	return errs
}

func positive(p *field.Path, d metav1.Duration) field.ErrorList {
	if d.Duration <= 0 {
		return field.ErrorList{field.Invalid(p, d.Duration.String(), "must be a positive duration such as 30s or 5m")}
	}
	return nil
}

func optionalURL(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return field.ErrorList{field.Invalid(p, s, "must be an absolute URL such as https://host:port")}
	}
	return nil
}

func dnsLabel(p *field.Path, s string) field.ErrorList {
	if msgs := validation.IsDNS1123Label(s); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(p, s, msgs[0])}
	}
	return nil
}

func dnsSubdomain(p *field.Path, s string) field.ErrorList {
	if msgs := validation.IsDNS1123Subdomain(s); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(p, s, msgs[0])}
	}
	return nil
}

func qualifiedName(p *field.Path, s string) field.ErrorList {
	if msgs := validation.IsQualifiedName(s); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(p, s, msgs[0])}
	}
	return nil
}
