package chart

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	yaml "go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the chart README's values table from values.yaml")

const (
	valuesFile = "spot-rebalancer/values.yaml"
	schemaFile = "spot-rebalancer/values.schema.json"
	readmeFile = "spot-rebalancer/README.md"
)

// value is one documented value: its path, default and `# --` comment.
type value struct {
	Path, Default, Meaning string
}

// documented walks values.yaml: a value is documented where its key has a
// `# -- ` comment (continued by the following comment lines); an object
// without one is walked into.
func documented(t *testing.T) []value {
	t.Helper()
	data, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var out []value
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			path := prefix + key.Value
			meaning, ok := comment(key.HeadComment)
			if !ok && val.Kind == yaml.MappingNode && len(val.Content) > 0 {
				walk(val, path+".")
				continue
			}
			if !ok {
				t.Errorf("%s: no `# --` comment", path)
			}
			out = append(out, value{Path: path, Default: flow(t, val), Meaning: meaning})
		}
	}
	walk(doc.Content[0], "")
	return out
}

// comment is the text of the last `# --` paragraph of a head comment.
func comment(head string) (string, bool) {
	i := strings.LastIndex(head, "# -- ")
	if i < 0 {
		return "", false
	}
	var words []string
	for _, line := range strings.Split(head[i:], "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		line = strings.TrimPrefix(line, "-- ")
		if line != "" {
			words = append(words, line)
		}
	}
	return strings.Join(words, " "), true
}

// flow renders a default on one line, as the table shows it.
func flow(t *testing.T, n *yaml.Node) string {
	t.Helper()
	var plain func(n *yaml.Node) *yaml.Node
	plain = func(n *yaml.Node) *yaml.Node {
		c := *n
		c.HeadComment, c.LineComment, c.FootComment = "", "", ""
		if c.Kind != yaml.ScalarNode {
			c.Style = yaml.FlowStyle
		}
		c.Content = nil
		for _, child := range n.Content {
			c.Content = append(c.Content, plain(child))
		}
		return &c
	}
	out, err := yaml.Marshal(plain(n))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(out))
	if s == "" || n.Kind == yaml.ScalarNode && n.Value == "" {
		s = `""`
	}
	return s
}

func table(values []value) string {
	var b strings.Builder
	b.WriteString("| value | default | meaning |\n|---|---|---|\n")
	for _, v := range values {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.Path, strings.ReplaceAll(v.Default, "|", `\|`), strings.ReplaceAll(v.Meaning, "|", `\|`))
	}
	return b.String()
}

// The README's table lists every value, with its default and comment.
func TestReadmeListsEveryValue(t *testing.T) {
	data, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start := strings.Index(readme, "| value | default | meaning |")
	if start < 0 {
		t.Fatal("the README has no values table")
	}
	end := start + strings.Index(readme[start:], "\n\n")
	if end < start {
		end = len(readme)
	} else {
		end++
	}
	want := table(documented(t))
	if *update {
		if err := os.WriteFile(readmeFile, []byte(readme[:start]+want+readme[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(want, readme[start:end]); diff != "" {
		t.Errorf("the README's values table is stale (go test ./deploy/chart -update) (-want +got):\n%s", diff)
	}
}

// values.schema.json describes every value of values.yaml and nothing
// else, and closes every object it does not leave free-form.
func TestSchemaCoversEveryValue(t *testing.T) {
	data, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	var inValues, inSchema []string
	var walkValues func(m map[string]any, prefix string, s map[string]any)
	walkValues = func(m map[string]any, prefix string, s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		for k, v := range m {
			path := prefix + k
			inValues = append(inValues, path)
			child, _ := props[k].(map[string]any)
			if sub, ok := v.(map[string]any); ok && child != nil && child["properties"] != nil {
				walkValues(sub, path+".", child)
			}
		}
	}
	var walkSchema func(s map[string]any, prefix string)
	walkSchema = func(s map[string]any, prefix string) {
		props, _ := s["properties"].(map[string]any)
		if props != nil && s["additionalProperties"] != false {
			t.Errorf("%q: an object with properties must refuse others (additionalProperties: false)", strings.TrimSuffix(prefix, "."))
		}
		for k, v := range props {
			inSchema = append(inSchema, prefix+k)
			walkSchema(v.(map[string]any), prefix+k+".")
		}
	}
	walkValues(values, "", schema)
	walkSchema(schema, "")
	slices.Sort(inValues)
	slices.Sort(inSchema)
	if diff := cmp.Diff(inValues, inSchema); diff != "" {
		t.Errorf("values.yaml (-) and values.schema.json (+) differ:\n%s", diff)
	}
}
