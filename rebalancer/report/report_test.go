package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func samplePlan() *planner.Plan {
	return &planner.Plan{Complete: false, Nodes: []planner.NodePlan{{
		Name: "spot-a-1", Signal: signals.RebalanceRecommendation, SignalSource: signals.SourcePlan, State: "at-risk", Pool: "spot-a",
		Replacement: planner.Replacement{Mode: config.ReplacementNode, Nodes: []string{}, Reason: "waiting for a new Ready node in pool spot-a (0 of 1)"},
		Pods: []planner.PodPlan{
			{Namespace: "shop", Name: "web-1", Action: planner.ActionEvict, Wave: 1, Destination: "od-1", Reasons: []string{},
				PDBs: []planner.PDBRef{{Name: "web", DisruptionsAllowed: 1}}},
			{Namespace: "shop", Name: "solo", Action: planner.ActionBlocked, Reasons: []string{"no controller"}, PDBs: []planner.PDBRef{}},
		},
		Blockers: []planner.Blocker{{Namespace: "shop", Name: "solo", Reason: "no controller"}},
		Unprotected: []planner.Unprotected{{Namespace: "shop", Kind: "Deployment", Name: "api", Pods: 2,
			SuggestedPDB: planner.SuggestedPDB{Name: "api", Selector: map[string]string{"app": "api"}, MaxUnavailable: 1}}},
	}}}
}

// The JSON field names are a promise to scripts (docs/plan.md).
func TestJSONFieldNames(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, samplePlan(), FormatJSON); err != nil {
		t.Fatal(err)
	}
	var generic struct {
		Nodes []map[string]json.RawMessage `json:"nodes"`
	}
	if err := json.Unmarshal(buf.Bytes(), &generic); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"name", "signal", "state", "pool", "replacement", "pods", "blockers", "unprotected"} {
		if _, ok := generic.Nodes[0][field]; !ok {
			t.Errorf("nodes[].%s missing", field)
		}
	}
	var pods []map[string]json.RawMessage
	_ = json.Unmarshal(generic.Nodes[0]["pods"], &pods)
	for _, field := range []string{"namespace", "name", "action", "wave", "destination", "reasons", "pdbs"} {
		if _, ok := pods[0][field]; !ok {
			t.Errorf("nodes[].pods[].%s missing", field)
		}
	}
	var repl map[string]json.RawMessage
	_ = json.Unmarshal(generic.Nodes[0]["replacement"], &repl)
	for _, field := range []string{"mode", "ready", "nodes"} {
		if _, ok := repl[field]; !ok {
			t.Errorf("nodes[].replacement.%s missing", field)
		}
	}
}

func TestTableShowsBlockersFirstAndSummarises(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, samplePlan(), FormatTable); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	blockers, pods := strings.Index(out, "BLOCKERS"), strings.Index(out, "PODS")
	if blockers < 0 || pods < 0 || blockers > pods {
		t.Errorf("blockers must come before pods:\n%s", out)
	}
	for _, want := range []string{"NODE spot-a-1", "mode node, not ready", "web (1)", "suggest: PDB api maxUnavailable=1 selector app=api",
		"Plan is blocked: 1 pod(s) cannot move"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// In the pod table the blocked pod comes first.
	if strings.Index(out, "shop       solo") > strings.Index(out, "shop       web-1") {
		t.Errorf("blocked pods must be listed first:\n%s", out)
	}
}

// A plan blocked only for now, because some pods fit nowhere until the
// reservations bring new capacity, says so.
func TestBlockedVerdictNamesThePodsReservationsAskFor(t *testing.T) {
	plan := samplePlan()
	plan.Nodes[0].Replacement.Provision = config.ProvisionReservations
	plan.Nodes[0].Replacement.Reservations = []planner.Reservation{{Pod: "shop/big"}, {Pod: "shop/web-1", Fits: "od-1"}}
	var buf bytes.Buffer
	if err := Write(&buf, plan, FormatTable); err != nil {
		t.Fatal(err)
	}
	if want := "1 pod(s) fit nowhere now: reservations ask an autoscaler for their room"; !strings.Contains(buf.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, buf.String())
	}
	plan.Nodes[0].Replacement.Provision = config.ProvisionNone
	buf.Reset()
	if err := Write(&buf, plan, FormatTable); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "reservations ask") {
		t.Errorf("without reservations the verdict must not promise them:\n%s", buf.String())
	}
}

func TestUnknownFormat(t *testing.T) {
	if err := Write(&bytes.Buffer{}, samplePlan(), "xml"); err == nil || !strings.Contains(err.Error(), "table, wide, json, yaml") {
		t.Errorf("err = %v, want one listing the formats", err)
	}
}

// YAML carries what JSON carries, under the same names.
func TestYAMLIsTheJSON(t *testing.T) {
	var js, ys bytes.Buffer
	if err := Write(&js, samplePlan(), FormatJSON); err != nil {
		t.Fatal(err)
	}
	if err := Write(&ys, samplePlan(), FormatYAML); err != nil {
		t.Fatal(err)
	}
	fromYAML, err := yaml.YAMLToJSON(ys.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal(js.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fromYAML, &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("YAML differs from JSON (-json +yaml):\n%s", diff)
	}
}

// Wide adds each pod's workload, priority and flags to the pod table.
func TestWideAddsColumns(t *testing.T) {
	plan := samplePlan()
	plan.Nodes[0].Pods[0].Workload, plan.Nodes[0].Pods[0].Granted, plan.Nodes[0].Pods[0].Priority = "Deployment/web", true, 7
	var table, wide bytes.Buffer
	if err := Write(&table, plan, FormatTable); err != nil {
		t.Fatal(err)
	}
	if err := Write(&wide, plan, FormatWide); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PRIORITY", "FLAGS", "Deployment/web", "granted"} {
		if !strings.Contains(wide.String(), want) {
			t.Errorf("wide lacks %q:\n%s", want, wide.String())
		}
		if strings.Contains(table.String(), want) {
			t.Errorf("table has %q, which only wide shows:\n%s", want, table.String())
		}
	}
}
