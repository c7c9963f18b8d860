#!/usr/bin/env bash
# Builds the real Kubernetes control plane that kube-qss's tests and demo run against:
# etcd, kube-apiserver, kube-controller-manager and kubectl, from their Go modules.
#
# Called by `make cluster-binaries` (and so by the demo, the tests and .ci/run). The binaries are
# cached outside the repository, keyed by version, so only the first run on a machine pays for
# the build; a warm cache returns at once. Prints the binary directory on its last line.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${KUBE_QSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-qss}"
BIN_DIR="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

mkdir -p "$CACHE_ROOT"
# One build at a time per cache: a second caller (another checkout, a parallel `make setup`)
# waits here, then finds the binaries present.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

if all_present; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "build-control-plane: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
work="$CACHE_ROOT/control-plane/src-k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$work/k8s" "$work/etcd" "$BIN_DIR.partial"
started=$(date +%s)

# --- Kubernetes: one module requiring k8s.io/kubernetes, with every staging module pinned. ---
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with ./staging paths, which
# mean nothing to a dependant; we pin each to the matching v0.X.Y tag instead.
staging_version="v0.${K8S_VERSION#v1.}"
cd "$work/k8s"
if [[ ! -f go.mod ]]; then
  go mod init kube-qss.local/control-plane >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } >> go.mod
  cat > tools.go <<'GO'
//go:build tools

// Package tools names the commands this module builds, so `go mod tidy` keeps their deps.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy
fi
version_pkg=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X $version_pkg.gitVersion=$K8S_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for cmd in kube-apiserver kube-controller-manager kubectl; do
  echo "build-control-plane: building $cmd $K8S_VERSION" >&2
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done

# --- etcd: its own module, so its dependency versions do not bend Kubernetes' ones. ---
cd "$work/etcd"
if [[ ! -f go.mod ]]; then
  go mod init kube-qss.local/etcd >/dev/null 2>&1
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >> go.mod
  cat > tools.go <<'GO'
//go:build tools

// Package tools names the command this module builds, so `go mod tidy` keeps its deps.
package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy
fi
echo "build-control-plane: building etcd $ETCD_VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$BIN_DIR.partial/etcd" go.etcd.io/etcd/server/v3

# Publish all binaries at once, so an interrupted build never looks like a warm cache.
rm -rf "$BIN_DIR"
mv "$BIN_DIR.partial" "$BIN_DIR"
echo "build-control-plane: built in $(( $(date +%s) - started ))s" >&2
echo "$BIN_DIR"
