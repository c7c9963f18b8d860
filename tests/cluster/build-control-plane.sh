#!/usr/bin/env bash
# Builds the real Kubernetes parts that kube-qss's tests and demo run, from their Go modules:
#
#   build-control-plane.sh          etcd, kube-apiserver, kube-controller-manager, kubectl
#   build-control-plane.sh node     kubelet, kube-scheduler, kube-proxy (same k8s.io/kubernetes
#                                   version) and CoreDNS, for local clusters with real nodes
#
# Called by `make setup` (and so by the demo, the tests and .ci/run). Each set is cached outside
# the repository in its own directory keyed by version; a binary already there is never built
# again, so a warm cache returns at once. Each binary is published by a rename when it is
# complete, so an interrupted build never looks like a warm cache. Prints the set's binary
# directory on its last line; progress and the time of every step go to stderr.
set -euo pipefail

TARGET="${1:-control-plane}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CACHE_ROOT="${KUBE_QSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-qss}"

case "$TARGET" in
  control-plane)
    SET="k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
    K8S_COMMANDS=(kube-apiserver kube-controller-manager kubectl)
    OTHER=etcd
    LOCK="$CACHE_ROOT/.build.lock"
    ;;
  node)
    SET="k8s-$K8S_VERSION-coredns-$COREDNS_VERSION"
    K8S_COMMANDS=(kubelet kube-scheduler kube-proxy)
    OTHER=coredns
    LOCK="$CACHE_ROOT/.build-node.lock"
    ;;
  *)
    echo "build-control-plane: unknown target '$TARGET' (control-plane or node)" >&2
    exit 2
    ;;
esac
BIN_DIR="$CACHE_ROOT/$TARGET/$SET/bin"
BINARIES=("$OTHER" "${K8S_COMMANDS[@]}")

missing() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || echo "$b"; done
}

# Warm cache: answer without waiting for anyone's lock.
if [[ -z "$(missing)" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$CACHE_ROOT" "$BIN_DIR"
# One build at a time per set: a second caller (another checkout, a parallel `make setup`)
# waits here, then finds the binaries present. The two sets have their own locks, so building
# node binaries never holds up someone who only needs the (cached) control plane.
exec 9>"$LOCK"
flock 9
mapfile -t TODO < <(missing)
if [[ ${#TODO[@]} -eq 0 ]]; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "build-control-plane: 'go' is not on PATH; install Go >= 1.24" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
started=$(date +%s)

wanted() {
  local b
  for b in "${TODO[@]}"; do [[ "$b" == "$1" ]] && return 0; done
  return 1
}

# build NAME PACKAGE [go build flags...]: build one binary in the current module and publish it.
build() {
  local name="$1" pkg="$2" t0
  shift 2
  t0=$(date +%s)
  echo "build-control-plane: building $name" >&2
  go build -trimpath "$@" -o "$BIN_DIR/.$name.partial" "$pkg"
  mv "$BIN_DIR/.$name.partial" "$BIN_DIR/$name"
  echo "build-control-plane: built $name in $(( $(date +%s) - t0 ))s" >&2
}

# k8s_module DIR CMD...: a module requiring k8s.io/kubernetes, with every staging module pinned.
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with ./staging paths, which
# mean nothing to a dependant; we pin each to the matching v0.X.Y tag instead.
k8s_module() {
  local dir="$1" cmd t0
  shift
  mkdir -p "$dir"
  cd "$dir"
  [[ -f go.sum ]] && return 0
  t0=$(date +%s)
  rm -f go.mod tools.go
  local staging_version="v0.${K8S_VERSION#v1.}"
  go mod init kube-qss.local/k8s-commands >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } >> go.mod
  {
    echo '//go:build tools'
    echo
    echo "// Package tools names the commands this module builds, so \`go mod tidy\` keeps their deps."
    echo 'package tools'
    echo
    echo 'import ('
    for cmd in "$@"; do echo "	_ \"k8s.io/kubernetes/cmd/$cmd\""; done
    echo ')'
  } > tools.go
  go mod tidy
  echo "build-control-plane: prepared module in $dir in $(( $(date +%s) - t0 ))s" >&2
}

# own_module DIR NAME REQUIREMENT FILE: a module of its own requiring REQUIREMENT (so its
# dependency versions do not bend Kubernetes' ones), whose one source FILE is read from stdin.
own_module() {
  local dir="$1" name="$2" requirement="$3" file="$4"
  mkdir -p "$dir"
  cd "$dir"
  [[ -f go.sum ]] && return 0
  rm -f go.mod
  go mod init "kube-qss.local/$name" >/dev/null 2>&1
  echo "require $requirement" >> go.mod
  cat > "$file"
  go mod tidy
}

version_pkg=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w -X $version_pkg.gitVersion=$K8S_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
k8s_ldflags="$k8s_ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

# Each set's Kubernetes commands come from the same pinned k8s.io/kubernetes, in a module of
# the set's own: one set's cached module is never touched by the other, and the Go build cache
# still shares every package the two have in common.
work="$CACHE_ROOT/$TARGET/src-$SET"
k8s_module "$work/k8s" "${K8S_COMMANDS[@]}"
for cmd in "${K8S_COMMANDS[@]}"; do
  wanted "$cmd" && build "$cmd" "k8s.io/kubernetes/cmd/$cmd" -ldflags "$k8s_ldflags"
done

if wanted etcd; then
  own_module "$work/etcd" etcd "go.etcd.io/etcd/server/v3 $ETCD_VERSION" tools.go <<'GO'
//go:build tools

// Package tools names the command this module builds, so `go mod tidy` keeps its deps.
package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  build etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
fi

# CoreDNS with only the plugins a test node's cluster DNS uses (the documented way to build a
# smaller CoreDNS): Services and Pods from the API server, a hosts file for the QSS nodes' names,
# and nothing that forwards queries off the machine.
if wanted coredns; then
  own_module "$work/coredns" coredns "github.com/coredns/coredns $COREDNS_VERSION" main.go <<'GO'
// Command coredns is CoreDNS with the plugins a kube-qss test node's cluster DNS needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins' order, as CoreDNS's own plugin.cfg orders them.
func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "hosts", "kubernetes"}
}

func main() { coremain.Run() }
GO
  build coredns kube-qss.local/coredns -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
fi

echo "build-control-plane: $TARGET built in $(( $(date +%s) - started ))s" >&2
echo "$BIN_DIR"
