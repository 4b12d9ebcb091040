package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The real controller binary serves /metrics over HTTPS to callers whose
// token may get it, and pprof behind the same check: no token is refused
// (401), a token without the right refused (403), a token bound to a
// metrics-reader role served.
func TestMetricsAreServedOnlyToThoseAllowed(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	bin := buildBinary(t)
	port, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	startProcess(t, bin, "controller", "--kubeconfig", c.Kubeconfig, "--config", controllerConfig(t, ns), "--leader-elect=false",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port), "--profiling", "--health-probe-bind-address", "0", "--log-format", "text")

	reader := serviceAccountToken(t, c, ns, "prometheus")
	nobody := serviceAccountToken(t, c, ns, "nobody")
	role := "e2e-metrics-reader-" + ns
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics", "/debug/pprof/*"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.RbacV1().ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{})
	})
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), role, metav1.DeleteOptions{})
	})

	// The endpoint's certificate is self-signed: what is checked here is
	// who may read, not the transport.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	c.WaitFor(t, 30*time.Second, "the metrics endpoint to serve the reader", func(context.Context) (bool, error) {
		code, body, err := get("/metrics", reader)
		return err == nil && code == http.StatusOK && strings.Contains(body, "controller_runtime_"), nil
	})
	// What every component serves besides controller-runtime's own.
	oldPrefix := "spot_rebalancer_" + "rebalancer_" // the names before 0.2
	if _, body, err := get("/metrics", reader); err != nil || !strings.Contains(body, `spot_rebalancer_build_info{commit=`) ||
		strings.Contains(body, oldPrefix) {
		t.Errorf("/metrics lacks spot_rebalancer_build_info or still has names starting %s (%v):\n%s", oldPrefix, err, body)
	}
	for _, tc := range []struct {
		who, path, token string
		want             int
	}{
		{"no token", "/metrics", "", http.StatusUnauthorized},
		{"a token without the right", "/metrics", nobody, http.StatusForbidden},
		{"no token", "/debug/pprof/cmdline", "", http.StatusUnauthorized},
		{"a token without the right", "/debug/pprof/cmdline", nobody, http.StatusForbidden},
		{"the reader", "/debug/pprof/cmdline", reader, http.StatusOK},
	} {
		code, _, err := get(tc.path, tc.token)
		if err != nil || code != tc.want {
			t.Errorf("%s on %s: %d (%v), want %d", tc.who, tc.path, code, err, tc.want)
		}
	}
	// controller-runtime's filter answers a token the API server cannot
	// review with 500, not 401: what matters is that nothing is served.
	if code, body, err := get("/metrics", "not-a-token"); err != nil || code == http.StatusOK || strings.Contains(body, "controller_runtime_") {
		t.Errorf("a forged token on /metrics: %d (%v), served %v", code, err, strings.Contains(body, "controller_runtime_"))
	}
	// And nothing on plain HTTP.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/metrics answered on plain HTTP")
		}
	}
}

// serviceAccountToken creates a ServiceAccount in ns and returns a token
// of it.
func serviceAccountToken(t *testing.T, c *cluster.Cluster, ns, name string) string {
	t.Helper()
	ctx := cluster.Context(t)
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}
