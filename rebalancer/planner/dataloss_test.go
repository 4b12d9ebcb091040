package planner

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// A pod's emptyDir volumes and claims on local PersistentVolumes are named
// as data that stays behind; a claim on a network volume, a ConfigMap or a
// claim that is not bound are not.
func TestDataLoss(t *testing.T) {
	claim := func(name, pv string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pv}}
	}
	local := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "disk-1"},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/disk-1"}}}}
	network := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "vol-1"},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-1"}}}}
	snap := snapshot.New(time.Now(), snapshot.Objects{
		PVCs: []*corev1.PersistentVolumeClaim{claim("fast", "disk-1"), claim("data", "vol-1"), claim("pending", "")},
		PVs:  []*corev1.PersistentVolume{local, network}})
	vol := func(name string, src corev1.VolumeSource) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: src}
	}
	pvc := func(name string) corev1.VolumeSource {
		return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		vol("cache", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}),
		vol("fast", pvc("fast")), vol("data", pvc("data")), vol("pending", pvc("pending")), vol("missing", pvc("missing")),
		vol("config", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}),
	}}}
	want := []string{"emptyDir cache", "local PersistentVolume disk-1 (claim fast)"}
	if diff := cmp.Diff(want, dataLoss(snap, pod)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := dataLoss(snap, &corev1.Pod{}); got != nil {
		t.Errorf("a pod without volumes loses %v", got)
	}
}
