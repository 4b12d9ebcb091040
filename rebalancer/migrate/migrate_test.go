package migrate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func TestPlan(t *testing.T) {
	const readable = `{"node":"risky","from":2,"to":4,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["web-0","web-1"]}`
	withRecord := func(name, uid, raw string) appsv1.Deployment {
		d := appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: k8stypes.UID("uid-" + uid)}}
		if raw != "" {
			d.Annotations = map[string]string{signals.AnnotationSurgeState: raw}
		}
		return d
	}
	type move struct {
		Deployment, Record, Holder, State, Problem string
	}
	tests := map[string]struct {
		deployments []appsv1.Deployment
		want        []move
	}{
		"no records: nothing to move": {deployments: []appsv1.Deployment{withRecord("web", "1", "")}},
		"a record moves as written, held by its node": {
			deployments: []appsv1.Deployment{withRecord("web", "1", ""), withRecord("api", "2", readable)},
			want:        []move{{Deployment: "shop/api", Record: "spot-rebalancer/surge-uid-2", Holder: "risky", State: readable}},
		},
		"a record that does not parse moves as written, held by no one": {
			deployments: []appsv1.Deployment{withRecord("api", "2", "{")},
			want: []move{{Deployment: "shop/api", Record: "spot-rebalancer/surge-uid-2", State: "{",
				Problem: "deployment shop/api: annotation spot-rebalancer.io/surge-state: unexpected end of JSON input"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []move
			for _, m := range Plan("spot-rebalancer", tc.deployments) {
				if m.Record.Annotations[signals.AnnotationSurgeDeployment] != m.Deployment.Namespace+"/"+m.Deployment.Name ||
					m.Record.Labels[signals.LabelRecord] != signals.SurgeRecordLabel {
					t.Errorf("record %s: annotations %v, labels %v", m.Record.Name, m.Record.Annotations, m.Record.Labels)
				}
				if (m.State == nil) != (m.Problem != "") {
					t.Errorf("record %s: state %v with problem %q", m.Record.Name, m.State, m.Problem)
				}
				got = append(got, move{Deployment: m.Deployment.Namespace + "/" + m.Deployment.Name, Record: m.Record.Namespace + "/" + m.Record.Name,
					Holder: ptr.Deref(m.Record.Spec.HolderIdentity, ""), State: m.Record.Annotations[signals.AnnotationSurgeState], Problem: m.Problem})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
