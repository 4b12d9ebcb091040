package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// user is the image's user: distroless's nonroot, which the chart's
	// security context names too.
	user       = "65532:65532"
	entrypoint = "/spot-rebalancer"
	// rootsModule compiles Mozilla's CA roots into the binary, used when
	// the system has none (the image has no base to bring them), so the
	// AWS SDK verifies TLS.
	rootsModule = "golang.org/x/crypto/x509roots/fallback"
)

// imageFor is the image of one platform: one layer holding the binary.
func imageFor(o *options, p platform, binary string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(entrypoint, "/"), Mode: 0o755, Size: int64(len(data)),
		ModTime: o.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, l); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = p.OS, p.Arch, v1.Time{Time: o.Created}
	cf.Config = v1.Config{User: user, Entrypoint: []string{entrypoint}, WorkingDir: "/", Labels: labels(o)}
	return mutate.ConfigFile(img, cf)
}

// labels are the OCI annotations of the image.
func labels(o *options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "spot-rebalancer",
		"org.opencontainers.image.description": "Spot-aware admission webhook and scheduler-aware rebalancer for Kubernetes",
		"org.opencontainers.image.source":      "https://github.com/" + o.GitHub,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Commit,
		"org.opencontainers.image.created":     o.Created.Format("2006-01-02T15:04:05Z"),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

func nameOptions(o *options) []name.Option {
	if o.PlainHTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

// imageName is the image's reference: <registry>/spot-rebalancer:<version>.
func imageName(o *options) string { return fmt.Sprintf("%s/spot-rebalancer:%s", o.Registry, o.Version) }

// index is the multi-arch image.
func index(o *options, binaries map[platform]string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range imagePlatforms {
		img, err := imageFor(o, p, binaries[p])
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	return idx, nil
}

// writeLayout writes the multi-arch image as an OCI image layout in
// dir, its index annotated with the image's name (crane push, skopeo copy
// and containerd import take it).
func writeLayout(o *options, binaries map[platform]string, dir string) error {
	idx, err := index(o, binaries)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	l, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return l.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": imageName(o)}))
}

// pushImage pushes the multi-arch index and returns its reference.
func pushImage(ctx context.Context, o *options, binaries map[platform]string) (string, error) {
	ref, err := name.ParseReference(imageName(o), nameOptions(o)...)
	if err != nil {
		return "", err
	}
	idx, err := index(o, binaries)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return ref.String(), nil
}

// checkImage pulls the image as a node would and checks it: both
// platforms, the user, the entrypoint, the labels, and that the host's
// binary in it runs and prints the version, with the CA roots compiled in.
func checkImage(ctx context.Context, o *options, image string) []error {
	fail := func(format string, args ...any) error { return fmt.Errorf("image: "+format, args...) }
	ref, err := name.ParseReference(image, nameOptions(o)...)
	if err != nil {
		return []error{fail("%v", err)}
	}
	idx, err := remote.Index(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return []error{fail("pulling the index: %v", err)}
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return []error{fail("%v", err)}
	}
	var errs []error
	var got []string
	for _, d := range manifest.Manifests {
		if d.Platform == nil {
			errs = append(errs, fail("manifest %s has no platform", d.Digest))
			continue
		}
		p := platform{d.Platform.OS, d.Platform.Architecture}
		got = append(got, p.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			errs = append(errs, fail("%s: %v", p, err))
			continue
		}
		cf, err := img.ConfigFile()
		if err != nil {
			errs = append(errs, fail("%s: %v", p, err))
			continue
		}
		if cf.OS != p.OS || cf.Architecture != p.Arch {
			errs = append(errs, fail("%s: its config says %s/%s", p, cf.OS, cf.Architecture))
		}
		if cf.Config.User != user {
			errs = append(errs, fail("%s: user %q, want %q", p, cf.Config.User, user))
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{entrypoint}) {
			errs = append(errs, fail("%s: entrypoint %q, want [%s]", p, cf.Config.Entrypoint, entrypoint))
		}
		if v := cf.Config.Labels["org.opencontainers.image.version"]; v != o.Version {
			errs = append(errs, fail("%s: label org.opencontainers.image.version %q, want %q", p, v, o.Version))
		}
		bin, err := extract(img, strings.TrimPrefix(entrypoint, "/"), filepath.Join(o.Dist, "check"))
		if err != nil {
			errs = append(errs, fail("%s: %v", p, err))
			continue
		}
		if err := isELFFor(bin, p); err != nil {
			errs = append(errs, fail("%s: %v", p, err))
		}
		if p != host() {
			continue
		}
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if want := fmt.Sprintf("spot-rebalancer v%s (commit %s", o.Version, o.Commit); err != nil || !strings.HasPrefix(string(out), want) {
			errs = append(errs, fail("%s: %s --version printed %q (%v), want %q...", p, entrypoint, out, err, want))
		}
		if info, err := buildinfo.ReadFile(bin); err != nil || !slices.ContainsFunc(info.Deps, func(m *debug.Module) bool { return m.Path == rootsModule }) {
			errs = append(errs, fail("%s: the binary does not carry CA roots (%s) (%v)", p, rootsModule, err))
		}
	}
	slices.Sort(got)
	var want []string
	for _, p := range imagePlatforms {
		want = append(want, p.String())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		errs = append(errs, fail("platforms %v, want %v", got, want))
	}
	return errs
}

// extract writes one file of the image's filesystem into dir.
func extract(img v1.Image, path, dir string) (string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s is not in the image", path)
		}
		if err != nil {
			return "", err
		}
		if h.Name != path {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		f, err := os.CreateTemp(dir, "image-*")
		if err != nil {
			return "", err
		}
		defer f.Close()
		if _, err := io.Copy(f, tr); err != nil {
			return "", err
		}
		if err := f.Chmod(os.FileMode(h.Mode) & 0o755); err != nil {
			return "", err
		}
		return filepath.Clean(f.Name()), nil
	}
}

// machines are the ELF machine types of the image's architectures.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// isELFFor checks that a binary is a static Linux executable of the
// platform's architecture.
func isELFFor(path string, p platform) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF binary: %w", entrypoint, err)
	}
	defer f.Close()
	if want, ok := machines[p.Arch]; !ok || f.Machine != want {
		return fmt.Errorf("%s is built for %s, not %s", entrypoint, f.Machine, p.Arch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: the image has no loader", entrypoint)
		}
	}
	return nil
}
