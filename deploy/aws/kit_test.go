package aws

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/sources/ec2"
	"github.com/spot-rebalancer/spot-rebalancer/sources/queue"
)

// calls are the AWS API calls the code can make: the methods of the
// narrow client interfaces its packages are written against (the SDK
// clients satisfy them; nothing else is called).
func calls() []string {
	var out []string
	for prefix, api := range map[string]reflect.Type{
		"sqs":         reflect.TypeFor[queue.SQS](),
		"ec2":         reflect.TypeFor[ec2.API](),
		"autoscaling": reflect.TypeFor[asg.API](),
	} {
		for m := range api.Methods() {
			out = append(out, prefix+":"+m.Name)
		}
	}
	slices.Sort(out)
	return out
}

type policy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  string
		Condition map[string]map[string]string
	}
}

// The controller's policy grants exactly what the code calls, never a
// wildcard action.
func TestControllerPolicyGrantsExactlyTheCallsTheCodeMakes(t *testing.T) {
	data, err := os.ReadFile("controller-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var p policy
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("controller-policy.json: %v", err)
	}
	if p.Version != "2012-10-17" {
		t.Errorf("policy version %q, want 2012-10-17", p.Version)
	}
	var granted []string
	for _, s := range p.Statement {
		if s.Effect != "Allow" {
			t.Errorf("statement %s: effect %q", s.Sid, s.Effect)
		}
		granted = append(granted, s.Action...)
		for _, a := range s.Action {
			switch {
			case strings.HasPrefix(a, "sqs:") && s.Resource != "arn:aws:sqs:REGION:ACCOUNT_ID:spot-rebalancer":
				t.Errorf("statement %s grants %s on %q: only on the queue's ARN", s.Sid, a, s.Resource)
			case a == "autoscaling:SetDesiredCapacity" || a == "autoscaling:TerminateInstanceInAutoScalingGroup":
				if !strings.HasPrefix(s.Resource, "arn:aws:autoscaling:") || s.Condition["StringEquals"]["aws:ResourceTag/spot-rebalancer"] != "enabled" {
					t.Errorf("statement %s grants %s on %q with %v: only on groups tagged spot-rebalancer=enabled", s.Sid, a, s.Resource, s.Condition)
				}
			}
		}
	}
	slices.Sort(granted)
	if diff := cmp.Diff(calls(), granted); diff != "" {
		t.Errorf("the policy's actions differ from the calls the code makes (-calls +policy):\n%s", diff)
	}
}

type template struct {
	Resources map[string]struct {
		Type       string
		Properties json.RawMessage
	}
}

type rule struct {
	State        string
	EventPattern map[string]any
	Targets      []struct {
		Id  string
		Arn map[string][]string
	}
}

type queuePolicy struct {
	Queues         []map[string]string
	PolicyDocument struct {
		Statement []struct {
			Sid       string
			Effect    string
			Principal any
			Action    string
			Condition map[string]map[string]any
		}
	}
}

// The rules forward exactly the events the consumer acts on, to the queue,
// and the queue takes messages only from them.
func TestQueueRulesForwardExactlyWhatTheConsumerReads(t *testing.T) {
	data, err := os.ReadFile("queue.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tmpl template
	if err := yaml.Unmarshal(data, &tmpl); err != nil {
		t.Fatalf("queue.yaml: %v", err)
	}
	var detailTypes []string
	var rules []string
	for name, r := range tmpl.Resources {
		if r.Type != "AWS::Events::Rule" {
			continue
		}
		rules = append(rules, name)
		var props rule
		if err := json.Unmarshal(r.Properties, &props); err != nil {
			t.Fatalf("rule %s: %v", name, err)
		}
		if props.State != "" && props.State != "ENABLED" {
			t.Errorf("rule %s: state %s", name, props.State)
		}
		// One detail type per rule, from aws.ec2, filtered on nothing
		// else but a state change's states.
		types, _ := props.EventPattern["detail-type"].([]any)
		if len(types) != 1 {
			t.Fatalf("rule %s: detail types %v, want one", name, props.EventPattern["detail-type"])
		}
		detailType, _ := types[0].(string)
		detailTypes = append(detailTypes, detailType)
		want := map[string]any{"source": []any{"aws.ec2"}, "detail-type": []any{detailType}}
		if detailType == queue.DetailStateChange {
			var states []any
			for _, st := range queue.StoppingStates {
				states = append(states, st)
			}
			want["detail"] = map[string]any{"state": states}
		}
		if diff := cmp.Diff(want, props.EventPattern); diff != "" {
			t.Errorf("rule %s: the event pattern differs from what the consumer acts on (-want +rule):\n%s", name, diff)
		}
		if len(props.Targets) != 1 || !slices.Equal(props.Targets[0].Arn["Fn::GetAtt"], []string{"Queue", "Arn"}) {
			t.Errorf("rule %s: targets %+v, want the queue only", name, props.Targets)
		}
	}
	slices.Sort(detailTypes)
	want := []string{queue.DetailStateChange, queue.DetailRebalance, queue.DetailInterruption}
	slices.Sort(want)
	if diff := cmp.Diff(want, detailTypes); diff != "" {
		t.Errorf("the rules' detail types differ from what the consumer acts on (-consumer +rules):\n%s", diff)
	}

	qp, ok := tmpl.Resources["QueuePolicy"]
	if !ok || qp.Type != "AWS::SQS::QueuePolicy" {
		t.Fatal("queue.yaml has no AWS::SQS::QueuePolicy QueuePolicy")
	}
	var props queuePolicy
	if err := json.Unmarshal(qp.Properties, &props); err != nil {
		t.Fatalf("QueuePolicy: %v", err)
	}
	if len(props.Queues) != 1 || props.Queues[0]["Ref"] != "Queue" {
		t.Errorf("QueuePolicy applies to %v, want the stack's Queue", props.Queues)
	}
	var allowed []string
	tlsOnly := false
	for _, s := range props.PolicyDocument.Statement {
		if s.Effect == "Deny" && s.Principal == "*" && s.Action == "sqs:*" && s.Condition["Bool"]["aws:SecureTransport"] == "false" {
			tlsOnly = true
		}
		if s.Effect != "Allow" {
			continue
		}
		if s.Action != "sqs:SendMessage" || !reflect.DeepEqual(s.Principal, map[string]any{"Service": "events.amazonaws.com"}) {
			t.Errorf("queue policy statement %s allows %q to %v: want only sqs:SendMessage by events.amazonaws.com", s.Sid, s.Action, s.Principal)
		}
		if s.Condition["StringEquals"]["aws:SourceAccount"] == nil {
			t.Errorf("queue policy statement %s does not pin aws:SourceAccount", s.Sid)
		}
		arns, _ := s.Condition["ArnEquals"]["aws:SourceArn"].([]any)
		for _, a := range arns {
			ref, _ := a.(map[string]any)["Fn::GetAtt"].([]any)
			if len(ref) == 2 && ref[1] == "Arn" {
				allowed = append(allowed, ref[0].(string))
			}
		}
	}
	if !tlsOnly {
		t.Error("the queue policy does not deny requests without TLS")
	}
	slices.Sort(rules)
	slices.Sort(allowed)
	if diff := cmp.Diff(rules, allowed); diff != "" {
		t.Errorf("the queue policy's source ARNs differ from the stack's rules (-rules +policy):\n%s", diff)
	}
}
