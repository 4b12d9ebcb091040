package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// PodReadyDelayAnnotation on a pod delays its readiness by a duration
// ("3s"): the pod is Running and Ready only that long after it is bound,
// like an application that takes time to start. Without it pods are Ready
// at once.
const PodReadyDelayAnnotation = "pod-ready.stage.kwok.x-k8s.io/delay"

// kwokStages are kwok's own default stages (what kwokctl uses when given
// none), read from the kwok module the tools were built from.
var kwokStages = []string{
	"kustomize/stage/node/fast/node-initialize.yaml",
	"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"kustomize/stage/pod/fast/pod-ready.yaml",
	"kustomize/stage/pod/fast/pod-complete.yaml",
	"kustomize/stage/pod/fast/pod-delete.yaml",
}

// writeStages writes a kwokctl configuration holding kwok's default stages
// with two changes: the pod-ready stage waits for the pod's
// PodReadyDelayAnnotation, and the node-initialize stage (which makes a
// node Ready) for the node's ReadyDelayLabel.
func writeStages(root, path string) error {
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok")
	list.Dir = filepath.Join(root, "tests", "tools", "kwok")
	out, err := list.Output()
	if err != nil {
		return fmt.Errorf("finding the kwok module: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	var docs [][]byte
	for _, f := range kwokStages {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("reading kwok's stage: %w", err)
		}
		switch {
		case strings.HasSuffix(f, "/pod-ready.yaml"):
			data, err = withDelay(data, fmt.Sprintf(".metadata.annotations[%q]", PodReadyDelayAnnotation))
		case strings.HasSuffix(f, "/node-initialize.yaml"):
			data, err = withDelay(data, fmt.Sprintf(".metadata.labels[%q]", ReadyDelayLabel))
		}
		if err != nil {
			return err
		}
		docs = append(docs, bytes.TrimSpace(data))
	}
	return os.WriteFile(path, append(bytes.Join(docs, []byte("\n---\n")), '\n'), 0o600)
}

// withDelay delays a stage by the duration the expression reads from the
// object (none when it reads nothing).
func withDelay(data []byte, expression string) ([]byte, error) {
	var stage map[string]any
	if err := yaml.Unmarshal(data, &stage); err != nil {
		return nil, fmt.Errorf("kwok's stage: %w", err)
	}
	spec, ok := stage["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("kwok's stage has no spec")
	}
	spec["delay"] = map[string]any{
		"durationMilliseconds": 0,
		"durationFrom":         map[string]any{"expressionFrom": expression},
	}
	return yaml.Marshal(stage)
}
