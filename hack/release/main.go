// Command release builds and publishes a release, or rehearses one with
// --dry-run: the multi-arch container image (linux/amd64 and linux/arm64,
// built without a Docker engine: a static binary on an empty base, non-root
// UID 65532, OCI labels, the version baked in, CA roots compiled into the
// binary), the Helm chart as an OCI artifact, the plan binaries for Linux
// and macOS (also the kubectl plugin) with their checksums and a krew
// manifest. A dry run pushes to a registry it starts on 127.0.0.1 and then
// checks what it pushed as a user would pull it. The release workflow
// (.github/workflows/release.yaml) runs the same program without --dry-run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"sigs.k8s.io/yaml"
)

// platforms of the image and of the plan binaries.
var (
	imagePlatforms = []platform{{"linux", "amd64"}, {"linux", "arm64"}}
	planPlatforms  = []platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}
)

type platform struct{ OS, Arch string }

func (p platform) String() string { return p.OS + "/" + p.Arch }

// options of one release.
type options struct {
	// Version without a leading v (the chart's version and appVersion, the
	// image's tag).
	Version, Commit string
	// Created is the commit's time: every timestamp in the artifacts, so a
	// rebuild of the same commit gives the same bytes.
	Created time.Time
	// Registry is where images and charts go: the image is
	// <Registry>/spot-rebalancer:<Version>, the chart
	// oci://<Registry>/charts/spot-rebalancer.
	Registry string
	// PlainHTTP talks to the registry without TLS (the dry run's).
	PlainHTTP bool
	// DryRun: the registry is the program's own.
	DryRun           bool
	Root, Dist, Helm string
	// GitHub is the repository whose releases hold the archives (krew).
	GitHub string
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("release: ")
	var o options
	dryRun := flag.Bool("dry-run", false, "push to a registry started on 127.0.0.1 and check what was pushed")
	imageOnly := flag.Bool("image-only", false, "only build the multi-arch image, as an OCI image layout in <dist>/image (make image)")
	flag.StringVar(&o.Version, "version", "", "release version, e.g. 0.3.0 (default: from `git describe`; a dry run appends -dryrun.g<commit>)")
	flag.StringVar(&o.Registry, "registry", "ghcr.io/spot-rebalancer", "registry and namespace to publish to (ignored with --dry-run)")
	flag.StringVar(&o.Dist, "dist", "dist", "directory for the archives, checksums, chart package and krew manifest")
	flag.StringVar(&o.Helm, "helm", "bin/helm", "the helm binary")
	flag.StringVar(&o.GitHub, "github", "spot-rebalancer/spot-rebalancer", "GitHub repository of the release assets (krew manifest)")
	flag.Parse()
	if err := run(context.Background(), &o, *dryRun, *imageOnly); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, o *options, dryRun, imageOnly bool) error {
	start := time.Now()
	var err error
	if o.Root, err = git("rev-parse", "--show-toplevel"); err != nil {
		return err
	}
	if o.Commit, err = git("rev-parse", "--short=12", "HEAD"); err != nil {
		return err
	}
	unix, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return err
	}
	var secs int64
	if _, err := fmt.Sscan(unix, &secs); err != nil {
		return fmt.Errorf("commit time %q: %w", unix, err)
	}
	o.Created = time.Unix(secs, 0).UTC()
	if o.Version == "" {
		tag, err := git("describe", "--tags", "--abbrev=0")
		if err != nil {
			tag = "v" + chartAppVersion(o.Root)
		}
		o.Version = strings.TrimPrefix(tag, "v")
		if dryRun {
			o.Version += "-dryrun.g" + o.Commit
		}
	}
	o.Version = strings.TrimPrefix(o.Version, "v")
	if !filepath.IsAbs(o.Dist) {
		o.Dist = filepath.Join(o.Root, o.Dist)
	}
	if !filepath.IsAbs(o.Helm) {
		o.Helm = filepath.Join(o.Root, o.Helm)
	}
	if dryRun {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		o.Registry, o.PlainHTTP, o.DryRun = l.Addr().String()+"/spot-rebalancer", true, true
		log.Printf("dry run: registry on %s", l.Addr())
	}
	if imageOnly {
		binaries, err := buildAll(ctx, o, imagePlatforms)
		if err != nil {
			return err
		}
		dir := filepath.Join(o.Dist, "image")
		if err := writeLayout(o, binaries, dir); err != nil {
			return err
		}
		log.Printf("wrote %s (linux/amd64, linux/arm64) to %s; push it with: crane push %s %s", imageName(o), dir, dir, imageName(o))
		return nil
	}
	if err := os.RemoveAll(o.Dist); err != nil {
		return err
	}
	log.Printf("version %s, commit %s, registry %s", o.Version, o.Commit, o.Registry)

	binaries, err := buildAll(ctx, o, planPlatforms)
	if err != nil {
		return err
	}
	archives, err := writeArchives(o, binaries)
	if err != nil {
		return err
	}
	if err := writeKrewManifest(o, archives); err != nil {
		return err
	}
	image, err := pushImage(ctx, o, binaries)
	if err != nil {
		return err
	}
	chart, err := pushChart(ctx, o, image)
	if err != nil {
		return err
	}
	log.Printf("published image %s and chart %s", image, chart)

	var errs []error
	errs = append(errs, checkImage(ctx, o, image)...)
	errs = append(errs, checkChart(ctx, o, chart, image)...)
	errs = append(errs, checkArchives(ctx, o, archives)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("checks failed:\n%w", err)
	}
	log.Printf("every check passed in %s; artifacts in %s", time.Since(start).Round(time.Second), o.Dist)
	return nil
}

// buildAll builds the binary for every platform and returns the paths by
// platform.
func buildAll(ctx context.Context, o *options, platforms []platform) (map[platform]string, error) {
	ldflags := fmt.Sprintf("-s -w -X github.com/spot-rebalancer/spot-rebalancer/internal/version.Version=v%s -X github.com/spot-rebalancer/spot-rebalancer/internal/version.Commit=%s", o.Version, o.Commit)
	out := map[platform]string{}
	for _, p := range platforms {
		path := filepath.Join(o.Dist, "bin", p.OS+"_"+p.Arch, "spot-rebalancer")
		began := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", path, "./cmd/spot-rebalancer")
		cmd.Dir = o.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building for %s: %w\n%s", p, err, b)
		}
		log.Printf("built %s in %s", p, time.Since(began).Round(time.Second))
		out[p] = path
	}
	return out, nil
}

func git(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// host is the platform this program runs on, whose binaries it can run.
func host() platform { return platform{runtime.GOOS, runtime.GOARCH} }

// chartAppVersion reads appVersion from the chart.
func chartAppVersion(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "deploy", "chart", "spot-rebalancer", "Chart.yaml"))
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err != nil || yaml.Unmarshal(data, &chart) != nil || chart.AppVersion == "" {
		return "0.0.0"
	}
	return chart.AppVersion
}
