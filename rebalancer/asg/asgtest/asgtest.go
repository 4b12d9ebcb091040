// Package asgtest is a fake EC2 Auto Scaling service that speaks the Auto
// Scaling Query protocol (form-encoded requests, XML answers), for tests
// that drive the real AWS SDK against it.
package asgtest

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

const xmlns = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

// Group is a group of the fake.
type Group struct {
	Desired, Max int32
	Instances    []string
	// Lifecycle overrides an instance's InService.
	Lifecycle map[string]string
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Fake holds groups and answers for them.
type Fake struct {
	mu     sync.Mutex
	groups map[string]*Group
	calls  []string
	// Throttle answers this many requests with Throttling first.
	Throttle int
	// OnRaise is called (without the lock) when a group's desired
	// capacity is set, with the group and the new value.
	OnRaise func(group string, desired int32)
}

// New returns a fake with groups.
func New(groups map[string]*Group) *Fake { return &Fake{groups: groups} }

// Client serves the fake and returns an SDK client for it.
func (f *Fake) Client(t testing.TB) *autoscaling.Client {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return autoscaling.New(autoscaling.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
}

// Calls are the actions served, in order ("SetDesiredCapacity g 4").
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Group returns a copy of a group.
func (f *Fake) Group(name string) Group {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := *f.groups[name]
	g.Instances = append([]string(nil), g.Instances...)
	return g
}

// AddInstance puts an instance in a group (the group launched it).
func (f *Fake) AddInstance(group, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[group].Instances = append(f.groups[group].Instances, id)
}

type member struct {
	InstanceID string `xml:"InstanceId,omitempty"`
	GroupName  string `xml:"AutoScalingGroupName"`
	Desired    *int32 `xml:"DesiredCapacity,omitempty"`
	Max        *int32 `xml:"MaxSize,omitempty"`
	Min        *int32 `xml:"MinSize,omitempty"`
	Lifecycle  string `xml:"LifecycleState,omitempty"`
	Health     string `xml:"HealthStatus,omitempty"`
}

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	action := r.Form.Get("Action")
	w.Header().Set("Content-Type", "text/xml")
	f.mu.Lock()
	if f.Throttle > 0 {
		f.Throttle--
		f.calls = append(f.calls, action+" (throttled)")
		f.mu.Unlock()
		writeError(w, http.StatusBadRequest, "Throttling", "Rate exceeded")
		return
	}
	var body any
	var raised func()
	switch action {
	case "DescribeAutoScalingInstances":
		id := r.Form.Get("InstanceIds.member.1")
		f.calls = append(f.calls, action+" "+id)
		var members []member
		for name, g := range f.groups {
			for _, i := range g.Instances {
				if i == id {
					members = append(members, member{InstanceID: id, GroupName: name, Lifecycle: cmpOr(g.Lifecycle[id], "InService"), Health: "HEALTHY"})
				}
			}
		}
		body = result(action, struct {
			Members []member `xml:"AutoScalingInstances>member"`
		}{members})
	case "DescribeAutoScalingGroups":
		name := r.Form.Get("AutoScalingGroupNames.member.1")
		f.calls = append(f.calls, action+" "+name)
		var members []member
		if g, ok := f.groups[name]; ok {
			members = append(members, member{GroupName: name, Desired: aws.Int32(g.Desired), Max: aws.Int32(g.Max), Min: aws.Int32(0)})
		}
		body = result(action, struct {
			Members []member `xml:"AutoScalingGroups>member"`
		}{members})
	case "SetDesiredCapacity":
		name, desired := r.Form.Get("AutoScalingGroupName"), r.Form.Get("DesiredCapacity")
		f.calls = append(f.calls, action+" "+name+" "+desired)
		g, ok := f.groups[name]
		var to int32
		if _, err := fmt.Sscan(desired, &to); !ok || err != nil || to > g.Max {
			f.mu.Unlock()
			writeError(w, http.StatusBadRequest, "ValidationError", "bad group or capacity")
			return
		}
		g.Desired = to
		if f.OnRaise != nil {
			hook := f.OnRaise
			raised = func() { hook(name, to) }
		}
		body = result(action, struct{}{})
	case "TerminateInstanceInAutoScalingGroup":
		id, decrement := r.Form.Get("InstanceId"), r.Form.Get("ShouldDecrementDesiredCapacity")
		f.calls = append(f.calls, action+" "+id+" decrement="+decrement)
		for _, g := range f.groups {
			for i, have := range g.Instances {
				if have == id {
					g.Instances = append(g.Instances[:i], g.Instances[i+1:]...)
					if decrement == "true" {
						g.Desired--
					}
					break
				}
			}
		}
		body = result(action, struct {
			Activity struct {
				ActivityID string `xml:"ActivityId"`
				StatusCode string `xml:"StatusCode"`
			} `xml:"Activity"`
		}{})
	default:
		f.calls = append(f.calls, action)
		f.mu.Unlock()
		writeError(w, http.StatusBadRequest, "InvalidAction", "unsupported: "+action)
		return
	}
	f.mu.Unlock()
	out, err := xml.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(out)
	if raised != nil {
		raised()
	}
}

// response is an Auto Scaling Query answer: <ActionResponse><ActionResult>.
type response struct {
	XMLName  xml.Name
	Xmlns    string `xml:"xmlns,attr"`
	Result   any
	Metadata struct {
		RequestID string `xml:"RequestId"`
	} `xml:"ResponseMetadata"`
}

func result(action string, r any) response {
	resp := response{XMLName: xml.Name{Local: action + "Response"}, Xmlns: xmlns, Result: wrapped{name: action + "Result", v: r}}
	resp.Metadata.RequestID = "req-1"
	return resp
}

type wrapped struct {
	name string
	v    any
}

func (w wrapped) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	return e.EncodeElement(w.v, xml.StartElement{Name: xml.Name{Local: w.name}})
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns=%q><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>req-e</RequestId></ErrorResponse>`, xmlns, code, message)
}
