package config

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Well-known Spot labels and taints the default profiles cover: EKS managed
// node groups, Karpenter, and the long-standing spotInstance convention.
const (
	EKSCapacityTypeLabel       = "eks.amazonaws.com/capacityType"
	KarpenterCapacityTypeLabel = "karpenter.sh/capacity-type"
	SpotInstanceTaintKey       = "spotInstance"
)

// DefaultPoolLabels name a node's pool on EKS, Karpenter, eksctl and kops.
var DefaultPoolLabels = []string{
	"eks.amazonaws.com/nodegroup",
	"karpenter.sh/nodepool",
	"alpha.eksctl.io/nodegroup-name",
	"kops.k8s.io/instancegroup",
}

// Default returns the configuration a fresh install runs with.
func Default() *Config {
	c := &Config{APIVersion: APIVersion, Kind: Kind}
	SetDefaults(c)
	return c
}

// SetDefaults fills every field the file left unset.
func SetDefaults(c *Config) {
	w := &c.Webhook
	setInt32(&w.Port, 9443)
	setString(&w.Namespace, "spot-rebalancer")
	if w.ExcludedNamespaces == nil {
		w.ExcludedNamespaces = []string{metav1.NamespaceSystem}
	}
	if w.Profiles == nil {
		w.Profiles = DefaultProfiles()
	}

	cs := &c.Certs
	setString((*string)(&cs.Mode), string(CertModeSelfManaged))
	setString(&cs.ServiceName, "spot-rebalancer-webhook")
	setString(&cs.CASecretName, "spot-rebalancer-ca")
	setString(&cs.ServingSecretName, "spot-rebalancer-webhook-tls")
	if cs.WebhookConfigurations == nil {
		cs.WebhookConfigurations = []string{"spot-rebalancer"}
	}
	setDuration(&cs.CAValidity, 365*24*time.Hour)
	setDuration(&cs.ServingValidity, 90*24*time.Hour)
	setString(&cs.CertDir, "/tmp/k8s-webhook-server/serving-certs")

	r := &c.Rebalancer
	if r.PoolLabels == nil {
		r.PoolLabels = append([]string(nil), DefaultPoolLabels...)
	}
	setString((*string)(&r.Replacement.Mode), string(ReplacementNode))
	setDuration(&r.Replacement.Timeout, 10*time.Minute)
	setString((*string)(&r.Replacement.OnTimeout), string(OnTimeoutDrainIfFits))
	setString((*string)(&r.Replacement.Provision), string(ProvisionReservations))
	setString(&r.Replacement.ReservationImage, DefaultReservationImage)
	setString((*string)(&r.Retire), string(RetireAuto))
	setDuration(&r.DeadlineSafety, 15*time.Second)
	if r.ForceAtDeadline == nil {
		r.ForceAtDeadline = ptr.To(true)
	}
	setDuration(&r.MaxGraceAtDeadline, time.Minute)
	if r.ExcludeFromLoadBalancers == nil {
		r.ExcludeFromLoadBalancers = ptr.To(true)
	}
	if r.ImplicitBudget.MaxUnavailable == nil {
		r.ImplicitBudget.MaxUnavailable = ptr.To(intstr.FromString("25%"))
	}
	setInt32(&r.MaxConcurrentNodes, 1)
	setInt32(&r.MaxParallelEvictions, 20)
	if r.Surge.Enabled == nil {
		r.Surge.Enabled = ptr.To(true)
	}
	setDuration(&r.Surge.Timeout, 5*time.Minute)

	setDuration(&c.Agent.PollInterval, 2*time.Second)
	setDuration(&c.AWS.EC2.Interval, time.Minute)
}

// MinGraceAtDeadline is the least grace period of a pod deleted at an
// interruption's deadline: a grace period of 0 removes the pod from the API
// at once while it may still run (a StatefulSet could then run two pods of
// one identity).
const MinGraceAtDeadline = 5 * time.Second

// DefaultReservationImage is the pause image reservation pods run.
const DefaultReservationImage = "registry.k8s.io/pause:3.10"

// DefaultProfiles work unchanged on EKS managed node groups, Karpenter and
// clusters that taint Spot nodes spotInstance=true:PreferNoSchedule.
func DefaultProfiles() map[string]Profile {
	tolerations := []corev1.Toleration{
		{Key: EKSCapacityTypeLabel, Operator: corev1.TolerationOpEqual, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule},
		{Key: KarpenterCapacityTypeLabel, Operator: corev1.TolerationOpEqual, Value: "spot", Effect: corev1.TaintEffectNoSchedule},
		{Key: SpotInstanceTaintKey, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectPreferNoSchedule},
	}
	preferSpot := []corev1.PreferredSchedulingTerm{
		{Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: EKSCapacityTypeLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"SPOT"}},
		}}},
		{Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: KarpenterCapacityTypeLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"spot"}},
		}}},
	}
	return map[string]Profile{
		// tolerate lets pods run on Spot nodes without steering them there.
		"tolerate": {Tolerations: tolerations},
		// spot also prefers Spot capacity, falling back to on-demand.
		"spot": {Tolerations: tolerations, PreferredAffinity: preferSpot},
		// spot-spread also spreads replicas across zones, so one zone's
		// reclaim takes only part of a workload.
		"spot-spread": {Tolerations: tolerations, PreferredAffinity: preferSpot,
			Spread: []Spread{{TopologyKey: corev1.LabelTopologyZone, MaxSkew: 1}}},
	}
}

func setString(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

func setInt32(i *int32, v int32) {
	if *i == 0 {
		*i = v
	}
}

func setDuration(d *metav1.Duration, v time.Duration) {
	if d.Duration == 0 {
		d.Duration = v
	}
}
