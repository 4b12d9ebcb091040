// Package config owns spot-rebalancer's configuration file: its versioned
// types, their defaults, strict decoding and validation. Every subcommand
// loads the same file; flags override what it says.
package config

import (
	"net/url"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	// APIVersion is the only configuration version this build understands.
	APIVersion = "spot-rebalancer.io/v1alpha1"
	// Kind is the kind of the configuration document.
	Kind = "Config"
)

// Config is the whole configuration file.
type Config struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Webhook    Webhook    `json:"webhook"`
	Certs      Certs      `json:"certs"`
	Rebalancer Rebalancer `json:"rebalancer"`
	Agent      Agent      `json:"agent"`
	AWS        AWS        `json:"aws"`
}

// Webhook configures the mutating admission webhook.
type Webhook struct {
	// Port is the HTTPS port the webhook serves admission requests on.
	Port int32 `json:"port"`
	// Namespace is the components' own namespace: it is never mutated,
	// and it holds the webhook's Secrets and the controller's surge
	// records.
	Namespace string `json:"namespace"`
	// ExcludedNamespaces are never mutated, in addition to Namespace.
	ExcludedNamespaces []string `json:"excludedNamespaces"`
	// Profiles are what a namespace or pod opts into by name.
	Profiles map[string]Profile `json:"profiles"`
}

// Profile describes what the webhook adds to a pod that opts into it.
type Profile struct {
	// Tolerations are added unless the pod already tolerates the taint.
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// PreferredAffinity terms are added next to the pod's own preferences.
	// Never required terms: pods must still be able to fall back to
	// on-demand capacity.
	PreferredAffinity []corev1.PreferredSchedulingTerm `json:"preferredAffinity,omitempty"`
	// Spread adds ScheduleAnyway topology spread constraints over the pod's
	// own labels, one per topology key the pod does not spread on yet.
	Spread []Spread `json:"spread,omitempty"`
}

// Spread is a soft topology spread constraint.
type Spread struct {
	TopologyKey string `json:"topologyKey"`
	MaxSkew     int32  `json:"maxSkew"`
}

// CertMode says who provides the webhook's serving certificate.
type CertMode string

const (
	// CertModeSelfManaged has the leader controller create and rotate a CA
	// and serving certificate in Secrets.
	CertModeSelfManaged CertMode = "self-managed"
	// CertModeExternal serves a mounted certificate (e.g. cert-manager's)
	// and only reloads it when the files change.
	CertModeExternal CertMode = "external"
)

// Certs configures the webhook's certificates.
type Certs struct {
	Mode CertMode `json:"mode"`
	// ServiceName is the webhook Service; its DNS names go into the
	// serving certificate.
	ServiceName string `json:"serviceName"`
	// ExtraDNSNames are added to the serving certificate.
	ExtraDNSNames []string `json:"extraDNSNames,omitempty"`
	// CASecretName holds the CA key; only the controller reads it.
	CASecretName string `json:"caSecretName"`
	// ServingSecretName holds the serving certificate and key that webhook
	// replicas read.
	ServingSecretName string `json:"servingSecretName"`
	// WebhookConfigurations are the MutatingWebhookConfigurations whose
	// webhooks get the CA bundle.
	WebhookConfigurations []string        `json:"webhookConfigurations"`
	CAValidity            metav1.Duration `json:"caValidity"`
	ServingValidity       metav1.Duration `json:"servingValidity"`
	// CertDir holds tls.crt and tls.key in external mode.
	CertDir string `json:"certDir"`
}

// ReplacementMode says what the rebalancer waits for before draining.
type ReplacementMode string

const (
	// ReplacementNode waits for a new Ready node of the same pool per
	// at-risk node and for the simulation to place every pod.
	ReplacementNode ReplacementMode = "node"
	// ReplacementCapacity waits only for the simulation to place every pod.
	ReplacementCapacity ReplacementMode = "capacity"
	// ReplacementNone drains at once.
	ReplacementNone ReplacementMode = "none"
)

// OnTimeout says what happens when no replacement arrives in time.
type OnTimeout string

const (
	// OnTimeoutDrainIfFits drains when the simulation places every pod.
	OnTimeoutDrainIfFits OnTimeout = "drain-if-fits"
	// OnTimeoutKeepCordoned leaves the node cordoned and blocked.
	OnTimeoutKeepCordoned OnTimeout = "keep-cordoned"
	// OnTimeoutUncordon gives up and makes the node schedulable again.
	OnTimeoutUncordon OnTimeout = "uncordon"
)

// Provision says how the rebalancer asks for replacement capacity.
type Provision string

const (
	// ProvisionReservations creates placeholder pods with the moving pods'
	// requests and node constraints: any autoscaler that reacts to Pending
	// pods (Karpenter, Cluster Autoscaler) launches the room they need.
	ProvisionReservations Provision = "reservations"
	// ProvisionASG raises the desired capacity of the at-risk node's own
	// EC2 Auto Scaling group by one (self-managed groups without an
	// autoscaler).
	ProvisionASG Provision = "asg"
	// ProvisionNone asks for nothing: something else launches nodes.
	ProvisionNone Provision = "none"
)

// Retire says whether a node drained for a rebalance recommendation is
// given back.
type Retire string

const (
	// RetireAuto deletes a drained Karpenter node's NodeClaim (Karpenter
	// terminates the instance); other nodes stay cordoned.
	RetireAuto Retire = "auto"
	// RetireNone leaves every drained node cordoned.
	RetireNone Retire = "none"
)

// Rebalancer configures the scheduler-aware rebalancer.
type Rebalancer struct {
	// DryRun computes and reports plans and writes nothing else.
	DryRun bool `json:"dryRun"`
	// PoolLabels are read in order; the first present names a node's pool.
	PoolLabels  []string    `json:"poolLabels"`
	Replacement Replacement `json:"replacement"`
	// Retire gives a node drained for a rebalance recommendation back.
	Retire Retire `json:"retire"`
	// DeadlineSafety is taken off an interruption's termination time.
	DeadlineSafety metav1.Duration `json:"deadlineSafety"`
	// ForceAtDeadline deletes what is left when the deadline is reached.
	ForceAtDeadline *bool `json:"forceAtDeadline"`
	// MaxGraceAtDeadline caps the grace period an interruption's deadline
	// leaves a pod: a pod still on the node is deleted early enough to get
	// its own terminationGracePeriodSeconds, up to this, before the
	// termination time.
	MaxGraceAtDeadline metav1.Duration `json:"maxGraceAtDeadline"`
	// ExcludeFromLoadBalancers labels a draining node
	// node.kubernetes.io/exclude-from-external-load-balancers=true, so
	// cloud load balancers send it no new connections before its pods go.
	ExcludeFromLoadBalancers *bool `json:"excludeFromLoadBalancers"`
	// ImplicitBudget protects workloads without a PDB while draining for a
	// rebalance recommendation.
	ImplicitBudget ImplicitBudget `json:"implicitBudget"`
	// MaxConcurrentNodes per pool drain at once for rebalance
	// recommendations; interruptions are never queued.
	MaxConcurrentNodes int32 `json:"maxConcurrentNodes"`
	// MaxParallelEvictions caps evictions in flight across all nodes.
	MaxParallelEvictions int32 `json:"maxParallelEvictions"`
	Surge                Surge `json:"surge"`
}

// Replacement configures the wait for replacement capacity.
type Replacement struct {
	Mode      ReplacementMode `json:"mode"`
	Timeout   metav1.Duration `json:"timeout"`
	OnTimeout OnTimeout       `json:"onTimeout"`
	// Provision asks for the capacity waited for (rebalance
	// recommendations only).
	Provision Provision `json:"provision"`
	// ReservationImage is the image of reservation pods (a pause image).
	ReservationImage string `json:"reservationImage"`
}

// ImplicitBudget is the disruption budget given to workloads without a PDB.
type ImplicitBudget struct {
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable"`
}

// Surge configures the surge hand-off for Deployments.
type Surge struct {
	Enabled *bool `json:"enabled"`
	// WithHPA allows surging Deployments that a HorizontalPodAutoscaler
	// targets.
	WithHPA bool            `json:"withHPA"`
	Timeout metav1.Duration `json:"timeout"`
}

// Agent configures the per-node instance metadata agent.
type Agent struct {
	PollInterval metav1.Duration `json:"pollInterval"`
	// IMDSEndpoint overrides the instance metadata endpoint (tests, IPv6).
	IMDSEndpoint string `json:"imdsEndpoint,omitempty"`
}

// AWS configures the optional AWS API sources of the controller.
type AWS struct {
	Region string `json:"region,omitempty"`
	// Endpoint overrides every AWS service endpoint (tests, VPC endpoints).
	Endpoint string `json:"endpoint,omitempty"`
	Queue    Queue  `json:"queue"`
	EC2      EC2    `json:"ec2"`
}

// Queue configures the EventBridge-to-SQS signal source.
type Queue struct {
	// URL of the SQS queue; empty disables the source.
	URL string `json:"url,omitempty"`
	// DeleteUnknown deletes messages about instances of other clusters.
	DeleteUnknown bool `json:"deleteUnknown"`
	// Accounts are the AWS accounts whose events are believed (default:
	// the account in URL).
	Accounts []string `json:"accounts,omitempty"`
	// KeepRejected leaves messages that fail verification in the queue
	// instead of deleting them.
	KeepRejected bool `json:"keepRejected"`
}

// QueueAccount returns the AWS account in an SQS queue URL
// (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), or "".
func QueueAccount(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || !awsAccount.MatchString(parts[0]) {
		return ""
	}
	return parts[0]
}

var awsAccount = regexp.MustCompile(`^[0-9]{12}$`)

// BelievedAccounts are the accounts whose queue events are believed.
func (q Queue) BelievedAccounts() []string {
	if len(q.Accounts) > 0 {
		return q.Accounts
	}
	if a := QueueAccount(q.URL); a != "" {
		return []string{a}
	}
	return nil
}

// EC2 configures the EC2 API sources.
type EC2 struct {
	// DescribeInstances looks up the pool (ASG) of nodes whose labels do not
	// name one.
	DescribeInstances bool `json:"describeInstances"`
	// PollSpotRequests treats marked-for-termination Spot requests as
	// interruption notices.
	PollSpotRequests bool            `json:"pollSpotRequests"`
	Interval         metav1.Duration `json:"interval"`
}
