#!/usr/bin/env bash
# Builds the binaries of the local test cluster (README, "Development") into bin/ from the
# Go module proxy. Each tool lives in its own module under tests/tools/ so that
# its k8s.io requirements never touch the project's go.mod. A tool is rebuilt
# only when its module's pinned versions change (the stamp holds the version
# and a digest of go.sum), so a second run costs nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
mkdir -p "$bin"

# With arguments, only the named tools are built (e.g. `hack/tools.sh helm`).
only=" $* "

build() {
	local name=$1 dir=$2 pkg=$3 module=$4 ldflags=${5:-}
	local version digest want stamp="$bin/.$name.stamp"
	if [[ "$only" != "  " && "$only" != *" $name "* ]]; then
		return
	fi
	version=$(cd "$root/$dir" && go list -m -f '{{.Version}}' "$module")
	digest=$(sha256sum "$root/$dir/go.sum" | cut -c1-16)
	want="$module $version $digest${ldflags:+ $ldflags}"
	if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		echo "tools: $name $version is up to date"
		return
	fi
	echo "tools: building $name $version"
	local start=$SECONDS
	(cd "$root/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
	mv "$bin/$name.tmp" "$bin/$name"
	echo "$want" >"$stamp"
	echo "tools: built $name in $((SECONDS - start))s"
}

build etcd tests/tools/etcd . go.etcd.io/etcd/server/v3
# Stamp the Kubernetes binaries with their release as Kubernetes' own build
# does (hack/lib/version.sh), so the API server reports v1.x.y and not
# v0.0.0-master (Helm checks a chart's kubeVersion against it).
k8s_version=$(cd "$root/tests/tools/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
k8s_ldflags=${k8s_ldflags# }
build kube-apiserver tests/tools/kubernetes k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes "$k8s_ldflags"
build kube-controller-manager tests/tools/kubernetes k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes "$k8s_ldflags"
build kube-scheduler tests/tools/kubernetes k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes "$k8s_ldflags"
build kubectl tests/tools/kubernetes k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes "$k8s_ldflags"
build kwok tests/tools/kwok sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok
build kwokctl tests/tools/kwok sigs.k8s.io/kwok/cmd/kwokctl sigs.k8s.io/kwok
build ec2-metadata-mock tests/tools/aemm github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock github.com/aws/amazon-ec2-metadata-mock
# Helm's own release build stamps the Kubernetes version of its client-go as
# the default for `helm template` and `helm lint` (else v1.20, which the
# chart's kubeVersion refuses): the same here.
helm_k8s_minor=$(cd "$root/tests/tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
build helm tests/tools/helm helm.sh/helm/v3/cmd/helm helm.sh/helm/v3 \
	"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor"
build karpenter tests/tools/karpenter sigs.k8s.io/karpenter/kwok sigs.k8s.io/karpenter
build promtool tests/tools/prometheus github.com/prometheus/prometheus/cmd/promtool github.com/prometheus/prometheus
