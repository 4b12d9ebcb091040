package ec2

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// fakeEC2 speaks the EC2 Query protocol: form-encoded requests, XML answers.
type fakeEC2 struct {
	mu       sync.Mutex
	calls    []string
	throttle int // answer this many requests with RequestLimitExceeded first
}

const instanceXML = `<item><instanceId>%s</instanceId><instanceLifecycle>spot</instanceLifecycle><tagSet><item><key>aws:autoscaling:groupName</key><value>%s</value></item></tagSet></item>`

func (f *fakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f.mu.Lock()
	f.calls = append(f.calls, r.Form.Get("Action")+" "+r.Form.Get("NextToken"))
	throttled := f.throttle > 0
	f.throttle--
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	if throttled {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>`)
		return
	}
	switch r.Form.Get("Action") {
	case "DescribeInstances":
		// Two pages: i-a on the first, i-b on the second.
		if r.Form.Get("NextToken") == "" {
			fmt.Fprintf(w, `<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>1</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet>%s</instancesSet></item></reservationSet><nextToken>page-2</nextToken></DescribeInstancesResponse>`,
				fmt.Sprintf(instanceXML, "i-a", "eks-spot-a-1234"))
			return
		}
		fmt.Fprintf(w, `<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>2</requestId><reservationSet><item><reservationId>r-2</reservationId><instancesSet>%s</instancesSet></item></reservationSet></DescribeInstancesResponse>`,
			fmt.Sprintf(instanceXML, "i-b", "eks-spot-b-5678"))
	case "DescribeSpotInstanceRequests":
		fmt.Fprint(w, `<DescribeSpotInstanceRequestsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>3</requestId><spotInstanceRequestSet>`+
			`<item><spotInstanceRequestId>sir-1</spotInstanceRequestId><instanceId>i-a</instanceId><state>active</state><status><code>marked-for-termination</code><updateTime>2026-11-26T12:00:00.000Z</updateTime><message>marked</message></status></item>`+
			`<item><spotInstanceRequestId>sir-2</spotInstanceRequestId><instanceId>i-b</instanceId><state>active</state><status><code>fulfilled</code><updateTime>2026-11-26T11:00:00.000Z</updateTime></status></item>`+
			`</spotInstanceRequestSet></DescribeSpotInstanceRequestsResponse>`)
	default:
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `<Response><Errors><Error><Code>InvalidAction</Code><Message>unsupported</Message></Error></Errors></Response>`)
	}
}

func client(t *testing.T, f *fakeEC2) *ec2.Client {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
}

func TestInstancesFollowsPagesAndReadsTheASG(t *testing.T) {
	f := &fakeEC2{}
	got, err := Instances(t.Context(), client(t, f), []string{"i-b", "i-a", "i-a"})
	if err != nil {
		t.Fatal(err)
	}
	if got["i-a"].ASG != "eks-spot-a-1234" || got["i-b"].ASG != "eks-spot-b-5678" || got["i-a"].Lifecycle != "spot" {
		t.Errorf("got %+v", got)
	}
	if len(f.calls) != 2 {
		t.Errorf("calls = %v, want two pages of one call", f.calls)
	}
}

func TestThrottlingIsRetriedUntilSuccess(t *testing.T) {
	f := &fakeEC2{throttle: 1}
	got, err := Instances(t.Context(), client(t, f), []string{"i-a"})
	if err != nil {
		t.Fatalf("a single throttling answer must be retried: %v", err)
	}
	if got["i-a"].ASG == "" {
		t.Errorf("got %+v", got)
	}
	if !strings.HasPrefix(f.calls[0], "DescribeInstances") || len(f.calls) < 2 {
		t.Errorf("calls = %v, want a retry after the throttling answer", f.calls)
	}
}

func TestPersistentThrottlingIsAnError(t *testing.T) {
	f := &fakeEC2{throttle: 100}
	_, err := Instances(t.Context(), client(t, f), []string{"i-a"})
	if err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Fatalf("err = %v, want the throttling error once retries are spent", err)
	}
}

func TestSourceAnnotatesPoolsAndWritesMarkedRequests(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC)
	node := func(name, id string, labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/" + id}}
	}
	a := node("a", "i-a", nil)
	b := node("b", "i-b", map[string]string{"eks.amazonaws.com/nodegroup": "named"})
	kube := fake.NewClientset(a, b)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{sources.InstanceIDIndex: sources.IndexByInstanceID})
	_ = indexer.Add(a)
	_ = indexer.Add(b)
	f := &fakeEC2{}
	clk := clocktesting.NewFakeClock(now)
	s := &Source{API: client(t, f), Kube: kube, Writer: signals.Writer{Kube: kube, Clock: clk}, Clock: clk,
		PoolLabels: []string{"eks.amazonaws.com/nodegroup"}, DescribeInstances: true, PollSpotRequests: true,
		Interval: time.Minute, Metrics: NewMetrics(prometheus.NewRegistry()),
		index: sources.NodeIndex{Indexer: indexer}, looked: map[string]string{}}

	if err := s.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	gotA, _ := kube.CoreV1().Nodes().Get(t.Context(), "a", metav1.GetOptions{})
	if gotA.Annotations[signals.AnnotationPool] != "eks-spot-a-1234" {
		t.Errorf("node a pool annotation = %q", gotA.Annotations[signals.AnnotationPool])
	}

	gotB, _ := kube.CoreV1().Nodes().Get(t.Context(), "b", metav1.GetOptions{})
	if _, ok := gotB.Annotations[signals.AnnotationPool]; ok {
		t.Error("a node whose label names its pool was looked up")
	}
	sig, ok := signals.FromNode(gotA, now)
	if !ok || sig.Kind != signals.InterruptionNotice || !sig.TerminationTime.Equal(time.Date(2026, 11, 26, 12, 2, 0, 0, time.UTC)) {
		t.Errorf("signal on a = %+v, %v; want an interruption at the mark plus two minutes", sig, ok)
	}
	if _, ok := signals.FromNode(gotB, now); ok {
		t.Error("a fulfilled request is no interruption")
	}

	// A second round: the pool is cached, so only the Spot requests are asked.
	calls := len(f.calls)
	if err := s.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	if extra := f.calls[calls:]; len(extra) != 1 || !strings.HasPrefix(extra[0], "DescribeSpotInstanceRequests") {
		t.Errorf("second round calls = %v, want only DescribeSpotInstanceRequests", extra)
	}
	if n := testutil.ToFloat64(s.Metrics.Calls.WithLabelValues("instances", "ok")); n != 1 {
		t.Errorf("instances looked up %v times, want once", n)
	}
}

// DescribeInstances alone records a label-less node's lifecycle, so that an
// interruption notice for it is believed.
func TestSourceRecordsTheLifecycleOfNodesWithoutLabels(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC)
	a := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-a"}}
	kube := fake.NewClientset(a)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{sources.InstanceIDIndex: sources.IndexByInstanceID})
	_ = indexer.Add(a)
	clk := clocktesting.NewFakeClock(now)
	s := &Source{API: client(t, &fakeEC2{}), Kube: kube, Writer: signals.Writer{Kube: kube, Clock: clk}, Clock: clk,
		PoolLabels: []string{"eks.amazonaws.com/nodegroup"}, DescribeInstances: true,
		Interval: time.Minute, Metrics: NewMetrics(prometheus.NewRegistry()),
		index: sources.NodeIndex{Indexer: indexer}, looked: map[string]string{}}
	if err := s.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := kube.CoreV1().Nodes().Get(t.Context(), "a", metav1.GetOptions{})
	if v := got.Annotations[signals.AnnotationLifecycle]; v != "spot" {
		t.Errorf("lifecycle annotation %q, want spot", v)
	}
	if !signals.IsSpot(got) {
		t.Error("the node is not Spot by its recorded lifecycle")
	}
}
