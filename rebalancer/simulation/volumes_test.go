package simulation

import (
	"cmp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-helpers/storage/volume"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

const ebs = "ebs.csi.aws.com"

func claim(name string, mutate ...func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}}}
	for _, m := range mutate {
		m(c)
	}
	return c
}

// boundTo binds the claim to the named volume, as the PV controller does.
func boundTo(pv string) func(*corev1.PersistentVolumeClaim) {
	return func(c *corev1.PersistentVolumeClaim) {
		c.Spec.VolumeName = pv
		c.Annotations = map[string]string{volume.AnnBindCompleted: "yes"}
	}
}

func ofClass(sc string) func(*corev1.PersistentVolumeClaim) {
	return func(c *corev1.PersistentVolumeClaim) { c.Spec.StorageClassName = ptr.To(sc) }
}

func rwop(c *corev1.PersistentVolumeClaim) {
	c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
}

// ebsVolume is a CSI volume whose node affinity pins it to a zone, as the
// EBS driver makes them (and labelled with the zone, as older ones are).
func ebsVolume(name, zone string, labelled bool) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: ebs, VolumeHandle: "vol-" + name}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zone}}}}}}},
		}}
	if labelled {
		pv.Labels[corev1.LabelTopologyZone] = zone
		pv.Spec.NodeAffinity = nil
	}
	return pv
}

// localVolume is a local PersistentVolume on one node, available to bind.
func localVolume(name, nodeName, class string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("20Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName:       class,
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/disks/" + name}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName}}}}}}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable}}
}

func class(name, provisioner string, mode storagev1.VolumeBindingMode, zones ...string) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, VolumeBindingMode: &mode}
	if len(zones) > 0 {
		sc.AllowedTopologies = []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{
			{Key: corev1.LabelTopologyZone, Values: zones}}}}
	}
	return sc
}

func csiLimit(nodeName string, count int32) *storagev1.CSINode {
	return &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: ebs, NodeID: nodeName, Allocatable: &storagev1.VolumeNodeResources{Count: ptr.To(count)}}}}}
}

func withClaim(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
	}
}

func TestVolumePlacement(t *testing.T) {
	wffc, immediate := storagev1.VolumeBindingWaitForFirstConsumer, storagev1.VolumeBindingImmediate
	tests := map[string]struct {
		nodes   []*corev1.Node
		pods    []*corev1.Pod
		objects snapshot.Objects
		// want: destination, or "!" and a substring of the reason.
		want map[string]string
	}{
		"a bound zonal volume follows its zone": {
			nodes:   []*corev1.Node{node("risky", zone("zone-a")), node("b", zone("zone-b")), node("a", zone("zone-a"))},
			pods:    []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-a"))}, PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", false)}},
			want:    map[string]string{"db-0": "a"},
		},
		"room only in another zone: blocked with the scheduler's words": {
			nodes:   []*corev1.Node{node("risky", zone("zone-a")), node("b", zone("zone-b")), node("c", zone("zone-b"))},
			pods:    []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-a"))}, PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", false)}},
			want:    map[string]string{"db-0": "!0/3 nodes are available: 2 node(s) didn't match PersistentVolume's node affinity, 1 at risk"},
		},
		"a volume labelled with its zone (VolumeZone)": {
			nodes:   []*corev1.Node{node("risky", zone("zone-a")), node("b", zone("zone-b"))},
			pods:    []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-a"))}, PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", true)}},
			want:    map[string]string{"db-0": "!1 node(s) had no available volume zone"},
		},
		"a missing claim fails the pod before any node": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			want:  map[string]string{"db-0": "!0/2 nodes are available: persistentvolumeclaim \"data-db-0\" not found"},
		},
		"an unbound claim of an Immediate class": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", ofClass("gp3"))},
				StorageClasses: []*storagev1.StorageClass{class("gp3", ebs, immediate)}},
			want: map[string]string{"db-0": "!pod has unbound immediate PersistentVolumeClaims"},
		},
		"a claim bound to a volume that is gone": {
			nodes:   []*corev1.Node{node("risky"), node("a")},
			pods:    []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-gone"))}},
			want:    map[string]string{"db-0": "!1 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"},
		},
		"an unbound WaitForFirstConsumer claim goes where its class may provision": {
			nodes: []*corev1.Node{node("risky", zone("zone-a")), node("b", zone("zone-b")), node("c", zone("zone-c"))},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", ofClass("gp3-c"))},
				StorageClasses: []*storagev1.StorageClass{class("gp3-c", ebs, wffc, "zone-c")}},
			want: map[string]string{"db-0": "c"},
		},
		"an unbound claim of a class with no provisioner binds an available local volume": {
			nodes: []*corev1.Node{node("risky"), node("a"), node("b")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", ofClass("local"))},
				PVs:            []*corev1.PersistentVolume{localVolume("disk-b", "b", "local")},
				StorageClasses: []*storagev1.StorageClass{class("local", volume.NotSupportedProvisioner, wffc)}},
			want: map[string]string{"db-0": "b"},
		},
		"two claims and one local volume: no node binds both": {
			nodes: []*corev1.Node{node("risky"), node("b")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0"), withClaim("logs-db-0"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", ofClass("local")), claim("logs-db-0", ofClass("local"))},
				PVs:            []*corev1.PersistentVolume{localVolume("disk-b", "b", "local")},
				StorageClasses: []*storagev1.StorageClass{class("local", volume.NotSupportedProvisioner, wffc)}},
			want: map[string]string{"db-0": "!1 node(s) didn't find available persistent volumes to bind"},
		},
		"a local volume bound by one moving pod is not offered to the next": {
			// b, much roomier, is preferred for both; its one disk only for the first.
			nodes: []*corev1.Node{node("risky"), node("b", cpu("64")), node("c")},
			pods:  []*corev1.Pod{pod("db-0", "risky", req("2"), withClaim("d0")), pod("db-1", "risky", req("1"), withClaim("d1"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("d0", ofClass("local")), claim("d1", ofClass("local"))},
				PVs:            []*corev1.PersistentVolume{localVolume("disk-b", "b", "local"), localVolume("disk-c", "c", "local")},
				StorageClasses: []*storagev1.StorageClass{class("local", volume.NotSupportedProvisioner, wffc)}},
			want: map[string]string{"db-0": "b", "db-1": "c"},
		},
		"a ReadWriteOncePod claim another pod uses": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("shared")), pod("other", "a", withClaim("shared"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("shared", boundTo("pv-a"), rwop)},
				PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", false)}},
			want: map[string]string{"db-0": "!1 node(s) unavailable due to PersistentVolumeClaim with ReadWriteOncePod access mode already in-use by another pod"},
		},
		"a ReadWriteOncePod claim only the moving pod used moves with it": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("own"))},
			objects: snapshot.Objects{PVCs: []*corev1.PersistentVolumeClaim{claim("own", boundTo("pv-a"), rwop)},
				PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", false)}},
			want: map[string]string{"db-0": "a"},
		},
		"a node at its CSI attach limit takes no new volume, another does": {
			nodes: []*corev1.Node{node("risky"), node("full", cpu("64")), node("a")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0")), pod("there", "full", withClaim("data-there"))},
			objects: snapshot.Objects{
				PVCs: []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-0")), claim("data-there", boundTo("pv-there"))},
				PVs:  []*corev1.PersistentVolume{ebsVolume("pv-0", "zone-a", false), ebsVolume("pv-there", "zone-a", false)},
				// The roomier node is preferred, but its one attachment is taken.
				CSINodes: []*storagev1.CSINode{csiLimit("full", 1), csiLimit("a", 25)}},
			want: map[string]string{"db-0": "a"},
		},
		"every node at its attach limit": {
			nodes: []*corev1.Node{node("risky"), node("full")},
			pods:  []*corev1.Pod{pod("db-0", "risky", withClaim("data-db-0")), pod("there", "full", withClaim("data-there"))},
			objects: snapshot.Objects{
				PVCs:     []*corev1.PersistentVolumeClaim{claim("data-db-0", boundTo("pv-0")), claim("data-there", boundTo("pv-there"))},
				PVs:      []*corev1.PersistentVolume{ebsVolume("pv-0", "zone-a", false), ebsVolume("pv-there", "zone-a", false)},
				CSINodes: []*storagev1.CSINode{csiLimit("full", 1)}},
			want: map[string]string{"db-0": "!1 node(s) exceed max volume count"},
		},
		"two moving pods fill a node's last attachment: the second goes elsewhere": {
			nodes: []*corev1.Node{node("risky"), node("big", cpu("64")), node("small")},
			pods:  []*corev1.Pod{pod("db-0", "risky", req("2"), withClaim("d0")), pod("db-1", "risky", req("1"), withClaim("d1"))},
			objects: snapshot.Objects{
				PVCs:     []*corev1.PersistentVolumeClaim{claim("d0", boundTo("pv-0")), claim("d1", boundTo("pv-1"))},
				PVs:      []*corev1.PersistentVolume{ebsVolume("pv-0", "zone-a", false), ebsVolume("pv-1", "zone-a", false)},
				CSINodes: []*storagev1.CSINode{csiLimit("big", 1)}},
			want: map[string]string{"db-0": "big", "db-1": "small"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := tc.objects
			o.Nodes, o.Pods = tc.nodes, tc.pods
			snap := snapshot.New(time.Now(), o)
			var moving []*corev1.Pod
			for _, p := range tc.pods {
				if p.Spec.NodeName == "risky" {
					moving = append(moving, p)
				}
			}
			checkResults(t, New(snap, sets.New("risky"), moving).Place(moving), tc.want)
		})
	}
}

// A reservation's selectors: a zonal volume's node affinity and a labelled
// volume's zone; a local volume's hostname term is no selector a new node
// could match, so it gives none.
func TestVolumeNodeSelectors(t *testing.T) {
	snap := snapshot.New(time.Now(), snapshot.Objects{
		PVCs: []*corev1.PersistentVolumeClaim{claim("affine", boundTo("pv-a")), claim("labelled", boundTo("pv-b")),
			claim("local", boundTo("disk-1")), claim("unbound")},
		PVs: []*corev1.PersistentVolume{ebsVolume("pv-a", "zone-a", false), ebsVolume("pv-b", "zone-b", true), localVolume("disk-1", "risky", "local")}})
	p := pod("db-0", "risky", withClaim("affine"), withClaim("labelled"), withClaim("local"), withClaim("unbound"))
	var got []string
	for _, sel := range VolumeNodeSelectors(snap, p) {
		for _, term := range sel.NodeSelectorTerms {
			for _, e := range term.MatchExpressions {
				got = append(got, e.Key+" "+string(e.Operator)+" "+strings.Join(e.Values, ","))
			}
		}
	}
	want := []string{"topology.kubernetes.io/zone In zone-a", "topology.kubernetes.io/zone In zone-b"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("selectors %q, want %q", got, want)
	}
}

func preferWith(appLabel, key string, weight int32, anti bool) podOpt {
	return func(p *corev1.Pod) {
		w := []corev1.WeightedPodAffinityTerm{{Weight: weight, PodAffinityTerm: term(appLabel, key)}}
		if p.Spec.Affinity == nil {
			p.Spec.Affinity = &corev1.Affinity{}
		}
		if anti {
			p.Spec.Affinity.PodAntiAffinity = &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: w}
		} else {
			p.Spec.Affinity.PodAffinity = &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: w}
		}
	}
}

// InterPodAffinity scoring: preferred affinity draws a pod to its
// partner's node, preferred anti-affinity pushes it off, and an existing
// pod's preferred affinity for the incoming pod draws it too; all else
// being equal (the two nodes are alike but for the pods on them).
func TestPreferredPodAffinityIsScored(t *testing.T) {
	tests := map[string]struct {
		pods []*corev1.Pod
		// smallerB is node b's CPU (default 3900m); controlPod a pod that
		// stays in the control run without affinity.
		smallerB   string
		controlPod *corev1.Pod
		want       string
	}{
		"preferred affinity: next to the cache": {
			pods: []*corev1.Pod{pod("web", "risky", preferWith("cache", "kubernetes.io/hostname", 100, false)), pod("cache", "b", app("cache"))},
			want: "b",
		},
		"preferred anti-affinity: away from the other replica": {
			// web-2 takes the default 100m and 200Mi of a: b must be much smaller.
			pods:       []*corev1.Pod{pod("web", "risky", app("web"), preferWith("web", "kubernetes.io/hostname", 100, true)), pod("web-2", "a", app("web"))},
			smallerB:   "1000m",
			controlPod: pod("web-2", "a", app("web")),
			want:       "b",
		},
		"an existing pod's preferred affinity for the incoming one": {
			pods: []*corev1.Pod{pod("web", "risky", app("web")), pod("sidecar", "b", app("sidecar"), preferWith("web", "kubernetes.io/hostname", 100, false))},
			want: "b",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// b has a little less room, so without the affinity a wins.
			nodes := []*corev1.Node{node("risky"), node("a"), node("b", cpu(cmp.Or(tc.smallerB, "3900m")))}
			snap := snapshot.New(time.Now(), snapshot.Objects{Nodes: nodes, Pods: tc.pods})
			moving := []*corev1.Pod{tc.pods[0]}
			if got := New(snap, sets.New("risky"), moving).Place(moving)[0]; got.Node != tc.want {
				t.Errorf("placed on %q (%s), want %q", got.Node, got.Reason, tc.want)
			}
			control := []*corev1.Pod{pod("web", "risky", app("web"))}
			if tc.controlPod != nil {
				control = append(control, tc.controlPod)
			}
			snap = snapshot.New(time.Now(), snapshot.Objects{Nodes: nodes, Pods: control})
			if got := New(snap, sets.New("risky"), control[:1]).Place(control[:1])[0]; got.Node != "a" {
				t.Errorf("the control without affinity went to %q, not a: the case proves nothing", got.Node)
			}
		})
	}
}
