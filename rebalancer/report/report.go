// Package report renders a planner.Plan for people (a table) and for
// machines (JSON with stable field names). It has no logic of its own: what
// it prints is what the controller would do.
package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Formats, as kubectl's -o names them.
const (
	FormatTable = "table"
	// FormatWide is the table with each pod's workload, priority and flags.
	FormatWide = "wide"
	FormatJSON = "json"
	FormatYAML = "yaml"
)

// Formats are every format Write takes.
var Formats = []string{FormatTable, FormatWide, FormatJSON, FormatYAML}

// Write renders the plan in the given format. JSON and YAML carry the same
// fields.
func Write(w io.Writer, plan *planner.Plan, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	case FormatYAML:
		out, err := yaml.Marshal(plan)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	case FormatTable, FormatWide:
		return writeTable(w, plan, format == FormatWide)
	default:
		return fmt.Errorf("unknown format %q: use %s", format, strings.Join(Formats, ", "))
	}
}

func writeTable(w io.Writer, plan *planner.Plan, wide bool) error {
	if len(plan.Nodes) == 0 {
		_, err := fmt.Fprintln(w, "No node is at risk. Name nodes (or select them with -l) to see what a rebalance would do.")
		return err
	}
	for i, n := range plan.Nodes {
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeNode(w, &n, wide)
	}
	fmt.Fprintln(w)
	_, err := fmt.Fprintln(w, summary(plan))
	return err
}

func writeNode(w io.Writer, n *planner.NodePlan, wide bool) {
	fmt.Fprintf(w, "NODE %s\n", n.Name)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  signal:\t%s (from %s)\n", n.Signal, n.SignalSource)
	if n.SignalNote != "" {
		fmt.Fprintf(tw, "  note:\t%s\n", n.SignalNote)
	}
	if n.Deadline != nil {
		fmt.Fprintf(tw, "  deadline:\t%s\n", n.Deadline.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "  state:\t%s\n", n.State)
	if n.DrainedBy != "" {
		fmt.Fprintf(tw, "  drained by:\t%s (its NodeClaim is being deleted): nothing here is evicted, asked for or deleted by spot-rebalancer\n", n.DrainedBy)
	}
	fmt.Fprintf(tw, "  pool:\t%s\n", orDash(n.Pool))
	ready := "not ready"
	if n.Replacement.Ready {
		ready = "ready"
	}
	fmt.Fprintf(tw, "  replacement:\tmode %s, %s: %s\n", n.Replacement.Mode, ready, n.Replacement.Reason)
	if len(n.Replacement.Nodes) > 0 {
		fmt.Fprintf(tw, "  replacement nodes:\t%s\n", strings.Join(n.Replacement.Nodes, ", "))
	}
	tw.Flush()

	if len(n.Replacement.Reservations) > 0 {
		what := "the room of the pods that must move"
		if n.Signal == signals.InterruptionNotice {
			what = "the room of the pods that fit nowhere and do not surge; each moves as soon as its room is there"
		}
		fmt.Fprintf(w, "\n  RESERVATIONS (%d, asking an autoscaler for %s", len(n.Replacement.Reservations), what)
		if a := n.Replacement.Avoid; a != nil {
			fmt.Fprintf(w, "; kept off %s where the pods allow", a)
		}
		fmt.Fprintln(w, ")")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  FOR POD\tRESERVATION\tRUNS ON\tFITS NOW\tNOTE")
		for _, r := range n.Replacement.Reservations {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", r.Pod, cmp.Or(r.Name, "(to create)"), orDash(r.Node), cmp.Or(r.Fits, "needs new capacity"), orDash(r.Note))
		}
		tw.Flush()
	}

	if len(n.Blockers) > 0 {
		fmt.Fprintf(w, "\n  BLOCKERS (%d)\n", len(n.Blockers))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, b := range n.Blockers {
			fmt.Fprintf(tw, "  %s/%s\t%s\n", b.Namespace, b.Name, b.Reason)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\n  PODS (%d)\n", len(n.Pods))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "  NAMESPACE\tNAME\tACTION\tWAVE\tDESTINATION\tPDB (ALLOWED)\tREASON"
	if n.Deadline != nil {
		header = "  NAMESPACE\tNAME\tACTION\tWAVE\tDESTINATION\tPDB (ALLOWED)\tLATEST START\tREASON"
	}
	if wide {
		header += "\tWORKLOAD\tPRIORITY\tFLAGS"
	}
	fmt.Fprintln(tw, header)
	for _, p := range sortedPods(n.Pods) {
		wave := "-"
		if p.Wave > 0 {
			wave = fmt.Sprint(p.Wave)
		}
		var pdbs []string
		for _, r := range p.PDBs {
			pdbs = append(pdbs, fmt.Sprintf("%s (%d)", r.Name, r.DisruptionsAllowed))
		}
		reasons := slices.Clone(p.Reasons)
		if len(p.DataLoss) > 0 {
			reasons = append(reasons, "data lost on moving: "+strings.Join(p.DataLoss, ", "))
		}
		destination := orDash(p.Destination)
		if p.WaitsForRoom && p.Destination == "" {
			destination = "(waits for room)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t", p.Namespace, p.Name, p.Action, wave, destination, orDash(strings.Join(pdbs, ", ")))
		if n.Deadline != nil {
			latest := "-"
			if p.LatestStart != nil {
				latest = p.LatestStart.UTC().Format("15:04:05")
			}
			fmt.Fprintf(tw, "%s\t", latest)
		}
		fmt.Fprint(tw, strings.Join(reasons, "; "))
		if wide {
			var flags []string
			if p.Critical {
				flags = append(flags, "critical")
			}
			if p.Granted {
				flags = append(flags, "granted")
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%s", orDash(p.Workload), p.Priority, orDash(strings.Join(flags, ",")))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	if len(n.Unprotected) > 0 {
		fmt.Fprintf(w, "\n  WORKLOADS WITHOUT A PDB (%d)\n", len(n.Unprotected))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, u := range n.Unprotected {
			fmt.Fprintf(tw, "  %s/%s %s\t%d pod(s) here\tsuggest: PDB %s maxUnavailable=%d selector %s\n",
				u.Namespace, strings.ToLower(u.Kind), u.Name, u.Pods, u.SuggestedPDB.Name, u.SuggestedPDB.MaxUnavailable, selector(u.SuggestedPDB))
		}
		tw.Flush()
	}
}

// sortedPods puts blocked pods first, then surges, evictions by wave, and
// skips.
func sortedPods(pods []planner.PodPlan) []planner.PodPlan {
	rank := map[planner.Action]int{planner.ActionBlocked: 0, planner.ActionSurge: 1, planner.ActionEvict: 2, planner.ActionSkip: 3}
	out := slices.Clone(pods)
	slices.SortStableFunc(out, func(a, b planner.PodPlan) int {
		if d := rank[a.Action] - rank[b.Action]; d != 0 {
			return d
		}
		if d := a.Wave - b.Wave; d != 0 {
			return d
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func summary(plan *planner.Plan) string {
	evict, blocked, waves, surges := 0, 0, 0, 0
	for i := range plan.Nodes {
		e, b, w := plan.Nodes[i].Tally()
		evict, blocked, waves, surges = evict+e, blocked+b, max(waves, w), surges+plan.Nodes[i].Surges()
	}
	moves := fmt.Sprintf("%d pod(s) to move in %d wave(s)", evict, waves)
	switch {
	case surges > 0 && evict == 0:
		moves = fmt.Sprintf("%d pod(s) to move, all by surge", surges)
	case surges > 0:
		moves = fmt.Sprintf("%d pod(s) to move: %d by surge, %d in %d wave(s)", evict+surges, surges, evict, waves)
	}
	if plan.Complete {
		return fmt.Sprintf("Plan can complete: %d node(s), %s.", len(plan.Nodes), moves)
	}
	verdict := fmt.Sprintf("Plan is blocked: %d pod(s) cannot move; %s.", blocked, moves)
	if n := needCapacity(plan); n > 0 {
		verdict += fmt.Sprintf(" %d pod(s) fit nowhere now: reservations ask an autoscaler for their room; a waiting node drains once it is there, an interrupted one moves each pod as soon as its room is.", n)
	}
	return verdict
}

// needCapacity counts the reservations that ask for new capacity: for
// pods the simulation places nowhere now.
func needCapacity(plan *planner.Plan) int {
	n := 0
	for i := range plan.Nodes {
		r := plan.Nodes[i].Replacement
		if r.Provision != config.ProvisionReservations {
			continue
		}
		for _, res := range r.Reservations {
			if res.Fits == "" {
				n++
			}
		}
	}
	return n
}

// selector writes the suggested selector as kubectl's -l takes it.
func selector(s planner.SuggestedPDB) string {
	return metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: s.Selector, MatchExpressions: s.MatchExpressions})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
