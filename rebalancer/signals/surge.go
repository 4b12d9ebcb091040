package signals

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"
)

// The surge hand-off's names.
const (
	// AnnotationSurge set to "false" on a Deployment opts it out of surges:
	// its pods are evicted in waves.
	AnnotationSurge = "spot-rebalancer.io/surge"
	// AnnotationSurgeState on a surge record (a Lease, SurgeRecordName)
	// holds the surge in progress as JSON (SurgeState), written before the
	// Deployment is scaled so that a restart or a new leader finishes or
	// undoes it. Versions before 0.2 wrote it on the Deployment itself:
	// `spot-rebalancer migrate surge-records` moves such records.
	AnnotationSurgeState = "spot-rebalancer.io/surge-state"
	// AnnotationSurgeDeployment on a surge record names its Deployment
	// (namespace/name) apart from the JSON, so that a record that does not
	// parse can still be given up properly.
	AnnotationSurgeDeployment = "spot-rebalancer.io/surge-deployment"
	// LabelRecord marks the rebalancer's records; SurgeRecordLabel is its
	// value on surge records.
	LabelRecord      = "spot-rebalancer.io/record"
	SurgeRecordLabel = "surge"
	// AnnotationSurgeFallback on a Node lists the Deployments
	// (namespace/name) whose surge off this node was given up: their pods
	// are evicted instead.
	AnnotationSurgeFallback = "spot-rebalancer.io/surge-fallback"
	// AnnotationPodDeletionCost is the ReplicaSet controller's hint: on a
	// scale-down it removes the pods with the lowest cost first.
	AnnotationPodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	// SurgeDeletionCost marks the pods a surge moves.
	SurgeDeletionCost = "-2147483648"
)

// Surge phases.
const (
	SurgeScalingUp   = "scaling-up"
	SurgeWaiting     = "waiting"
	SurgeScalingDown = "scaling-down"
)

// SurgeState is one surge of a Deployment's pods off the nodes draining
// together.
type SurgeState struct {
	// Node owns the surge: its drain steps it, and sweeps it up when the
	// node is gone or drained.
	Node string `json:"node"`
	// Nodes are all the nodes the pods move off, Node first; records
	// written before surges spanned nodes have none, meaning Node alone.
	Nodes []string `json:"nodes,omitempty"`
	// From is the replica count before the surge, restored at its end;
	// To is From plus the pods moving.
	From  int32     `json:"from"`
	To    int32     `json:"to"`
	Phase string    `json:"phase"`
	Since time.Time `json:"since"`
	// Pods are the names of the pods that move.
	Pods []string `json:"pods"`
}

// OffNodes are the nodes the surge moves pods off, its owner first.
func (s *SurgeState) OffNodes() []string {
	if len(s.Nodes) == 0 {
		return []string{s.Node}
	}
	return s.Nodes
}

// SurgeRecordName names the record of a surge of the Deployment with uid:
// one Deployment has at most one surge, and creating the record claims it.
func SurgeRecordName(uid types.UID) string { return "surge-" + string(uid) }

// NewSurgeRecord returns the record of st, a Lease in namespace.
func NewSurgeRecord(namespace string, d *appsv1.Deployment, st *SurgeState) (*coordinationv1.Lease, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	return SurgeRecordAsWritten(namespace, d, string(raw), st.Node), nil
}

// SurgeRecordAsWritten returns the record of d holding raw as it is (what
// an older version wrote, parsed or not), held by node ("" for none).
func SurgeRecordAsWritten(namespace string, d *appsv1.Deployment, raw, node string) *coordinationv1.Lease {
	record := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: SurgeRecordName(d.UID), Namespace: namespace,
			Labels: map[string]string{LabelRecord: SurgeRecordLabel},
			Annotations: map[string]string{
				AnnotationSurgeState:      raw,
				AnnotationSurgeDeployment: d.Namespace + "/" + d.Name,
			},
		},
	}
	if node != "" {
		// The holder is the node the pods move off: `kubectl get leases`
		// shows it.
		record.Spec.HolderIdentity = ptr.To(node)
	}
	return record
}

// SetSurgeState writes st into a copy of the record.
func SetSurgeState(record *coordinationv1.Lease, st *SurgeState) (*coordinationv1.Lease, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	out := record.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationSurgeState] = string(raw)
	out.Spec.HolderIdentity = ptr.To(st.Node)
	return out, nil
}

// SurgeDeploymentOf returns the namespace and name of the record's
// Deployment; ok is false when the record does not name one.
func SurgeDeploymentOf(record *coordinationv1.Lease) (namespace, name string, ok bool) {
	namespace, name, ok = strings.Cut(record.Annotations[AnnotationSurgeDeployment], "/")
	return namespace, name, ok && namespace != "" && name != "" && !strings.Contains(name, "/")
}

// SurgeOf reads the surge a record holds. A record that does not parse is
// reported as an error, never guessed at.
func SurgeOf(record *coordinationv1.Lease) (*SurgeState, error) {
	return parseSurge(record.Annotations, "surge record "+record.Namespace+"/"+record.Name)
}

// LegacySurgeOf reads a surge record an older version wrote on the
// Deployment itself; nil when there is none.
func LegacySurgeOf(d *appsv1.Deployment) (*SurgeState, error) {
	if _, ok := d.Annotations[AnnotationSurgeState]; !ok {
		return nil, nil
	}
	return parseSurge(d.Annotations, "deployment "+d.Namespace+"/"+d.Name)
}

func parseSurge(annotations map[string]string, what string) (*SurgeState, error) {
	raw, ok := annotations[AnnotationSurgeState]
	if !ok {
		return nil, fmt.Errorf("%s: no annotation %s", what, AnnotationSurgeState)
	}
	var s SurgeState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("%s: annotation %s: %w", what, AnnotationSurgeState, err)
	}
	// A surge moves at least one pod of a Deployment that has some, and
	// scales up by exactly as many as it moves.
	// Its nodes, when listed, begin with its owner, name no node twice and
	// are no more than its pods (each holds one at least).
	if s.Node == "" || s.From < 1 || int(s.To-s.From) != len(s.Pods) || len(s.Pods) == 0 ||
		len(s.Nodes) > 0 && (s.Nodes[0] != s.Node || slices.Contains(s.Nodes, "") || len(sets.New(s.Nodes...)) != len(s.Nodes) ||
			len(s.Nodes) > len(s.Pods)) {
		return nil, fmt.Errorf("%s: annotation %s: incomplete or inconsistent record %q", what, AnnotationSurgeState, raw)
	}
	return &s, nil
}
