package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// plugin is the binary's name as a kubectl plugin.
const plugin = "kubectl-spot_rebalancer"

// writeArchives writes one archive per platform, holding the binary named
// as the kubectl plugin (regular files only: krew refuses links) and the
// license, and a checksum file; it returns the archives by platform.
func writeArchives(o *options, binaries map[platform]string) (map[platform]string, error) {
	license, err := os.ReadFile(filepath.Join(o.Root, "LICENSE"))
	if err != nil {
		return nil, err
	}
	out := map[platform]string{}
	var sums []string
	for _, p := range planPlatforms {
		data, err := os.ReadFile(binaries[p])
		if err != nil {
			return nil, err
		}
		path := filepath.Join(o.Dist, fmt.Sprintf("spot-rebalancer_%s_%s_%s.tar.gz", o.Version, p.OS, p.Arch))
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		gz := gzip.NewWriter(f)
		tw := tar.NewWriter(gz)
		for _, e := range []struct {
			name string
			mode int64
			data []byte
		}{{name: plugin, mode: 0o755, data: data}, {name: "LICENSE", mode: 0o644, data: license}} {
			h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), ModTime: o.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		if err := gz.Close(); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		sum, err := sha256File(path)
		if err != nil {
			return nil, err
		}
		sums = append(sums, fmt.Sprintf("%s  %s\n", sum, filepath.Base(path)))
		out[p] = path
	}
	return out, os.WriteFile(filepath.Join(o.Dist, "SHA256SUMS"), []byte(strings.Join(sums, "")), 0o644)
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// krewPlugin is krew's plugin manifest (krew.googlecontainertools.github.com/v1alpha2).
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string         `json:"version"`
		Homepage         string         `json:"homepage"`
		ShortDescription string         `json:"shortDescription"`
		Description      string         `json:"description"`
		Platforms        []krewPlatform `json:"platforms"`
	} `json:"spec"`
}

type krewPlatform struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	URI    string `json:"uri"`
	SHA256 string `json:"sha256"`
	Bin    string `json:"bin"`
}

// writeKrewManifest writes dist/krew/spot-rebalancer.yaml, pointing at the
// GitHub release's archives.
func writeKrewManifest(o *options, archives map[platform]string) error {
	var k krewPlugin
	k.APIVersion, k.Kind = "krew.googlecontainertools.github.com/v1alpha2", "Plugin"
	k.Metadata.Name = "spot-rebalancer"
	k.Spec.Version = "v" + o.Version
	k.Spec.Homepage = "https://github.com/" + o.GitHub
	k.Spec.ShortDescription = "Dry-run rebalance plans for Spot nodes"
	k.Spec.Description = "Prints what spot-rebalancer would do for at-risk Spot nodes: for each pod the action, the eviction wave,\n" +
		"where the scheduler is predicted to place it and the PodDisruptionBudgets that cover it. Changes nothing.\n"
	for _, p := range planPlatforms {
		sum, err := sha256File(archives[p])
		if err != nil {
			return err
		}
		pl := krewPlatform{URI: fmt.Sprintf("https://github.com/%s/releases/download/v%s/%s", o.GitHub, o.Version, filepath.Base(archives[p])),
			SHA256: sum, Bin: plugin}
		pl.Selector.MatchLabels = map[string]string{"os": p.OS, "arch": p.Arch}
		k.Spec.Platforms = append(k.Spec.Platforms, pl)
	}
	data, err := yaml.Marshal(k)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.Dist, "krew"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Dist, "krew", "spot-rebalancer.yaml"), data, 0o644)
}

// checkArchives verifies SHA256SUMS and the krew manifest against the
// archives, then unpacks the host's and runs both names of the binary.
func checkArchives(ctx context.Context, o *options, archives map[platform]string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("archives: "+format, args...)) }
	f, err := os.Open(filepath.Join(o.Dist, "SHA256SUMS"))
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	listed := map[string]string{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if ok {
			listed[file] = sum
		}
	}
	for _, p := range planPlatforms {
		sum, err := sha256File(archives[p])
		if err != nil || listed[filepath.Base(archives[p])] != sum {
			fail("%s: SHA256SUMS says %q, the file is %s (%v)", filepath.Base(archives[p]), listed[filepath.Base(archives[p])], sum, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(o.Dist, "krew", "spot-rebalancer.yaml"))
	if err != nil {
		return append(errs, err)
	}
	var k krewPlugin
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		fail("krew manifest: %v", err)
	}
	if len(k.Spec.Platforms) != len(planPlatforms) {
		fail("krew manifest has %d platforms, want %d", len(k.Spec.Platforms), len(planPlatforms))
	}
	for _, pl := range k.Spec.Platforms {
		name := pl.URI[strings.LastIndex(pl.URI, "/")+1:]
		if listed[name] != pl.SHA256 || pl.Bin != plugin {
			fail("krew manifest: %s sha256 %s, bin %s; want %s, %s", name, pl.SHA256, pl.Bin, listed[name], plugin)
		}
	}

	// What krew unpacks: regular files only.
	for _, p := range planPlatforms {
		names, err := entries(archives[p])
		if err != nil {
			fail("%v", err)
		}
		if !slices.Contains(names, plugin) {
			fail("%s holds %v, not %s", filepath.Base(archives[p]), names, plugin)
		}
	}
	dir := filepath.Join(o.Dist, "check", "archive")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return append(errs, err)
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xzf", archives[host()], "-C", dir).CombinedOutput(); err != nil {
		return append(errs, fmt.Errorf("archives: unpacking %s: %v\n%s", archives[host()], err, out))
	}
	// The same binary runs as the full command under another name.
	data, err = os.ReadFile(filepath.Join(dir, plugin))
	if err != nil {
		return append(errs, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "spot-rebalancer"), data, 0o755); err != nil {
		return append(errs, err)
	}
	want := fmt.Sprintf("spot-rebalancer v%s (commit %s", o.Version, o.Commit)
	for _, args := range [][]string{{"spot-rebalancer", "--version"}, {plugin, "plan", "--version"}} {
		out, err := exec.CommandContext(ctx, filepath.Join(dir, args[0]), args[1:]...).Output()
		if err != nil || !strings.HasPrefix(string(out), want) {
			fail("%s: printed %q (%v), want %q...", strings.Join(args, " "), out, err, want)
		}
	}
	// The plugin offers plan and version, not the components.
	out, _ := exec.CommandContext(ctx, filepath.Join(dir, plugin), "--help").Output()
	_, commands, _ := strings.Cut(string(out), "Available Commands:")
	commands, _, _ = strings.Cut(commands, "\n\n")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(commands), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	if !strings.Contains(string(out), "kubectl spot-rebalancer [command]") || !slices.Contains(names, "plan") || slices.Contains(names, "controller") || slices.Contains(names, "webhook") {
		fail("%s --help offers %v, want plan and version:\n%s", plugin, names, out)
	}
	return errs
}

// entries lists an archive's entries, refusing any that is not a regular
// file or a directory (krew's unpacker refuses them too).
func entries(archive string) ([]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
			return nil, fmt.Errorf("%s: entry %s is of type %q: krew unpacks regular files and directories only", filepath.Base(archive), h.Name, h.Typeflag)
		}
		names = append(names, h.Name)
	}
}
