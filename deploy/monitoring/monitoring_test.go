package monitoring

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

const (
	alertsFile    = "../chart/spot-rebalancer/files/alerts.yaml"
	dashboardFile = "../chart/spot-rebalancer/files/dashboard.json"
	runbook       = "../../docs/runbook.md"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// unitTests is the part of alerts_test.yaml the coverage check reads.
type unitTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert says how bad it is, what it means and where its runbook
// entry is, and has unit tests where it fires and where it stays quiet.
func TestEveryAlertIsDocumentedAndTestedBothWays(t *testing.T) {
	rules, err := ParseRules(read(t, alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	var tests unitTests
	if err := yaml.Unmarshal(read(t, "alerts_test.yaml"), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)`).FindAllStringSubmatch(string(read(t, runbook)), -1) {
		anchors[strings.ToLower(m[1])] = true
	}
	if len(rules.Rules()) == 0 {
		t.Fatal("no rules")
	}
	seen := map[string]bool{}
	for _, r := range rules.Rules() {
		if r.Alert == "" || seen[r.Alert] {
			t.Errorf("rule %q: every rule is an alert with a name of its own", r.Alert)
		}
		seen[r.Alert] = true
		if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) {
			t.Errorf("%s: severity %q, want info, warning or critical", r.Alert, r.Labels["severity"])
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s", r.Alert, a)
			}
		}
		if _, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "docs/runbook.md#"); !anchors[anchor] || anchor != strings.ToLower(r.Alert) {
			t.Errorf("%s: runbook_url %q does not point at its own heading in docs/runbook.md", r.Alert, r.Annotations["runbook_url"])
		}
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("%s: unit tests where it fires: %v, where it stays quiet: %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
		if len(MetricNames(r.Expr)) == 0 && !strings.Contains(r.Expr, `job="spot-rebalancer"`) {
			t.Errorf("%s: queries no spot-rebalancer metric and not the scrapes of job spot-rebalancer", r.Alert)
		}
	}
}

// The dashboard's panels each have an ID of their own, a title, a
// description and the dashboard's data source variable; every target has a
// query of spot-rebalancer's metrics.
func TestDashboardPanels(t *testing.T) {
	d, err := ParseDashboard(read(t, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if d.UID != "spot-rebalancer" || d.Title == "" {
		t.Errorf("uid %q, title %q: the uid is what links and provisioning keep", d.UID, d.Title)
	}
	ids := map[int]bool{}
	var queries int
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: ID %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d: title %q and description %q, want both", p.ID, p.Title, p.Description)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: its data source is not the dashboard's ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no targets", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if len(MetricNames(tg.Expr)) == 0 || !strings.Contains(tg.Expr, `job=~"$job"`) {
				t.Errorf("panel %q target %s: %q queries no spot-rebalancer metric of the selected jobs", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if queries < 20 {
		t.Errorf("%d queries: the dashboard lost its panels", queries)
	}
}

func TestMetricNames(t *testing.T) {
	got := MetricNames(
		`histogram_quantile(0.9, sum by (le) (rate(spot_rebalancer_signal_to_drained_seconds_bucket[5m])))`,
		`rate(spot_rebalancer_signal_to_drained_seconds_count[5m]) + spot_rebalancer_nodes{state="x"}`,
		`sum(increase(spot_rebalancer_evictions_total{result="deleted"}[15m])) / up`,
	)
	want := []string{"spot_rebalancer_evictions_total", "spot_rebalancer_nodes", "spot_rebalancer_signal_to_drained_seconds"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// ParseRules refuses a field it does not know (a typo such as "for_").
func TestParseRulesRefusesUnknownFields(t *testing.T) {
	if _, err := ParseRules([]byte("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for_: 5m\n")); err == nil || !strings.Contains(err.Error(), "for_") {
		t.Errorf("err = %v, want one naming for_", err)
	}
}
