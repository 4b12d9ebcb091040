package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// as returns a client that impersonates user.
func as(t *testing.T, c *cluster.Cluster, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// checkControllerWrites checks, with the chart installed in ns as release
// spot-rebalancer, that the chart's policies narrow the controller's pod
// patches to the deletion cost and its Leases to its own, and that no one
// else with the right to write Leases there can forge a surge record.
func checkControllerWrites(t *testing.T, c *cluster.Cluster, ns string) {
	ctx := cluster.Context(t)
	controller := as(t, c, fmt.Sprintf("system:serviceaccount:%s:spot-rebalancer-controller", ns), "system:serviceaccounts", "system:serviceaccounts:"+ns)
	podNS := c.Namespace(t, nil)
	pod, err := c.Client.CoreV1().Pods(podNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "victim", Labels: map[string]string{"app": "victim"}},
		Spec:       corev1.PodSpec{NodeSelector: map[string]string{cluster.OwnerLabel: "nowhere"}, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patchPod := func(patch string) error {
		_, err := controller.CoreV1().Pods(podNS).Patch(ctx, pod.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
	// The policy is loaded a moment after it is created: each try writes
	// something new until it refuses.
	tries := 0
	c.WaitFor(t, 30*time.Second, "the policy to refuse the controller a pod label", func(ctx context.Context) (bool, error) {
		tries++
		return refused(patchPod(fmt.Sprintf(`{"metadata":{"labels":{"try":"%d"}}}`, tries)), "may not change a pod's spec, labels"), nil
	})
	if err := patchPod(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, signals.AnnotationPodDeletionCost, signals.SurgeDeletionCost)); err != nil {
		t.Errorf("the controller could not mark a pod: %v", err)
	}
	for name, tc := range map[string]struct{ patch, refusal string }{
		"change an image":        {`{"spec":{"containers":[{"name":"app","image":"registry.example/evil:1"}]}}`, "may not change a pod's spec"},
		"add another annotation": {`{"metadata":{"annotations":{"example.com/x":"y"}}}`, "may change no pod annotation but"},
	} {
		if err := patchPod(tc.patch); !refused(err, tc.refusal) {
			t.Errorf("the controller could %s: err %v, want a refusal saying %q", name, err, tc.refusal)
		}
	}

	// Pods it creates: reservations only, never one that runs as another
	// ServiceAccount of the namespace or mounts anything.
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: podNS}, Spec: pod.Spec}
	reservation := reserve.For("some-node", []*corev1.Pod{target}, reserve.Options{Namespace: ns})[0]
	created, err := controller.CoreV1().Pods(ns).Create(ctx, reservation, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("the controller could not create a reservation: %v", err)
	} else if err := c.Client.CoreV1().Pods(ns).Delete(ctx, created.Name, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
	for name, mutate := range map[string]func(*corev1.Pod){
		"as another ServiceAccount": func(p *corev1.Pod) {
			p.Spec.ServiceAccountName, p.Spec.AutomountServiceAccountToken = "spot-rebalancer-webhook", ptr.To(true)
		},
		"with another image": func(p *corev1.Pod) { p.Spec.Containers[0].Image = "registry.example/evil:1" },
		"without the label":  func(p *corev1.Pod) { delete(p.Labels, reserve.LabelNode) },
		"with a volume": func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		},
		"on the host network":  func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"with another command": func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/bin/sh"} },
		"as root":              func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsUser = ptr.To[int64](0) },
		"with a host port": func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		},
		"with a probe": func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		},
	} {
		p := reservation.DeepCopy()
		mutate(p)
		if _, err := controller.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); !refused(err, "may create only reservation pods") {
			t.Errorf("the controller could create a pod %s: err %v", name, err)
		}
	}

	lease := func(name string, labels map[string]string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}}
	}
	record := map[string]string{signals.LabelRecord: signals.SurgeRecordLabel}
	if _, err := controller.CoordinationV1().Leases(ns).Create(ctx, lease("surge-e2e", record), metav1.CreateOptions{}); err != nil {
		t.Errorf("the controller could not create a surge record: %v", err)
	}
	if _, err := controller.CoordinationV1().Leases(ns).Create(ctx, lease("someone-elses", nil), metav1.CreateOptions{}); !refused(err, "may write only its leader election Lease and its surge records") {
		t.Errorf("the controller could create another Lease in %s: %v", ns, err)
	}

	// Mallory may write Leases in the namespace (RBAC), but no record.
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "mallory"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create", "update", "delete", "get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mallory"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "mallory"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "mallory"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mallory := as(t, c, "mallory")
	const forbidden = "surge records are written only by the spot-rebalancer controller"
	c.WaitFor(t, 30*time.Second, "RBAC to let mallory write Leases", func(ctx context.Context) (bool, error) {
		_, err := mallory.CoordinationV1().Leases(ns).Create(ctx, lease("mallorys-own", nil), metav1.CreateOptions{})
		return err == nil, nil
	})
	if _, err := mallory.CoordinationV1().Leases(ns).Create(ctx, lease("surge-forged", record), metav1.CreateOptions{}); !refused(err, forbidden) {
		t.Errorf("mallory could forge a surge record: %v", err)
	}
	if _, err := mallory.CoordinationV1().Leases(ns).Create(ctx, lease("looks-harmless", record), metav1.CreateOptions{}); !refused(err, forbidden) {
		t.Errorf("mallory could create a Lease with the record label: %v", err)
	}
	if err := mallory.CoordinationV1().Leases(ns).Delete(ctx, "surge-e2e", metav1.DeleteOptions{}); !refused(err, forbidden) {
		t.Errorf("mallory could delete a surge record: %v", err)
	}
	if err := controller.CoordinationV1().Leases(ns).Delete(ctx, "surge-e2e", metav1.DeleteOptions{}); err != nil {
		t.Errorf("the controller could not remove its record: %v", err)
	}
}
