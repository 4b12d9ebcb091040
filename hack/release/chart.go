package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// helm runs the helm binary.
func helm(ctx context.Context, o *options, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, o.Helm, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A dry run keeps helm's registry configuration and cache in dist, so
	// it leaves nothing behind; a release uses the workflow's `helm
	// registry login`.
	if o.DryRun {
		cmd.Env = append(os.Environ(), "HELM_REGISTRY_CONFIG="+filepath.Join(o.Dist, "helm", "registry.json"),
			"HELM_CACHE_HOME="+filepath.Join(o.Dist, "helm", "cache"), "HELM_CONFIG_HOME="+filepath.Join(o.Dist, "helm", "config"))
	}
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// pushChart packages the chart with the release's version and image and
// pushes it as an OCI artifact; it returns the chart's oci:// reference
// (without the version).
func pushChart(ctx context.Context, o *options, image string) (string, error) {
	dir := filepath.Join(o.Dist, "chart", "spot-rebalancer")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(o.Root, "deploy", "chart", "spot-rebalancer"))); err != nil {
		return "", err
	}
	repository, _, _ := strings.Cut(image, ":"+o.Version)
	for file, edits := range map[string][][2]string{
		"Chart.yaml": {{`(?m)^version: .*$`, "version: " + o.Version}, {`(?m)^appVersion: .*$`, fmt.Sprintf("appVersion: %q", o.Version)}},
		// The image the release pushed, its tag the appVersion.
		"values.yaml": {{`(?m)^  repository: .*$`, "  repository: " + repository}},
	} {
		path := filepath.Join(dir, file)
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		for _, e := range edits {
			re := regexp.MustCompile(e[0])
			if len(re.FindAll(data, -1)) != 1 {
				return "", fmt.Errorf("%s: want exactly one line matching %s", file, e[0])
			}
			data = re.ReplaceAll(data, []byte(e[1]))
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return "", err
		}
	}
	if _, err := helm(ctx, o, "lint", "--strict", dir); err != nil {
		return "", err
	}
	if _, err := helm(ctx, o, "package", dir, "--destination", o.Dist); err != nil {
		return "", err
	}
	pkg := filepath.Join(o.Dist, fmt.Sprintf("spot-rebalancer-%s.tgz", o.Version))
	target := "oci://" + o.Registry + "/charts"
	args := []string{"push", pkg, target}
	if o.PlainHTTP {
		args = append(args, "--plain-http")
	}
	if _, err := helm(ctx, o, args...); err != nil {
		return "", err
	}
	return target + "/spot-rebalancer", nil
}

// checkChart pulls the chart from the registry and renders it as `helm
// install` would (helm template: the install action, client side, no
// cluster needed) and checks that every component runs the release's image.
func checkChart(ctx context.Context, o *options, chart, image string) []error {
	args := []string{"template", "spot-rebalancer", chart, "--version", o.Version, "--namespace", "spot-rebalancer"}
	if o.PlainHTTP {
		args = append(args, "--plain-http")
	}
	out, err := helm(ctx, o, args...)
	if err != nil {
		return []error{fmt.Errorf("chart: %w", err)}
	}
	var errs []error
	images := regexp.MustCompile(`(?m)^\s+image: (\S+)$`).FindAllStringSubmatch(out, -1)
	if len(images) < 3 {
		errs = append(errs, fmt.Errorf("chart: %d images rendered, want the controller's, the webhook's and the agent's at least", len(images)))
	}
	for _, m := range images {
		if m[1] != image {
			errs = append(errs, fmt.Errorf("chart: renders image %s, want %s", m[1], image))
		}
	}
	if !strings.Contains(out, fmt.Sprintf("app.kubernetes.io/version: %q", o.Version)) {
		errs = append(errs, fmt.Errorf("chart: the rendering does not carry version %s", o.Version))
	}
	return errs
}
