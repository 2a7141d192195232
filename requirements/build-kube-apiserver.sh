#!/bin/bash
# Builds kube-apiserver from Debian bookworm's `kubernetes` source package, once.
#
# Debian ships etcd-server but no kube-apiserver binary (nor k3s/kwok); its source package
# `kubernetes` carries the full tree with vendor/, which builds offline with Debian's Go.
# The binary is cached outside the repository, in $KUBE_CACHE_DIR, and reused: a second
# run only checks that it is there. Measured on 2 cores: ~12 minutes for the build.
#
# Usage: requirements/build-kube-apiserver.sh   (as root; `make kube-apiserver` calls it)
# Prints the path of the binary on its last line.
set -euo pipefail

KUBE_SRC_VERSION="${KUBE_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
KUBE_CACHE_DIR="${KUBE_CACHE_DIR:-/var/cache/daas-hub}"
here="$(cd "$(dirname "$0")" && pwd)"
binary="$KUBE_CACHE_DIR/kube-apiserver-$KUBE_SRC_VERSION"

apt_get() {
  # another install may hold the dpkg lock for a while: wait for it instead of failing
  apt-get -o DPkg::Lock::Timeout=900 "$@"
}

# 1. the Debian packages (etcd, the Go toolchain, rsync, dpkg-source)
missing=""
for p in $(grep -v '^\s*#' "$here/apt-kube.txt" | xargs); do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "apt: installing$missing"
  apt_get update -q
  apt_get install -y -q --no-install-recommends $missing
fi

if [ -x "$binary" ]; then
  echo "kube-apiserver: cached"
  echo "$binary"
  exit 0
fi

# 2. a deb-src line for bookworm, mirroring the deb line, if there is none yet
srclist=/etc/apt/sources.list.d/daas-hub-bookworm-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src .* bookworm ' /etc/apt/sources.list; then
  cat > "$srclist" <<SRC
# Added by daas-hub (requirements/build-kube-apiserver.sh): the source of kube-apiserver.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_get update -q
fi

# 3. fetch and unpack the source (34 MB), build only cmd/kube-apiserver, offline
work="$(mktemp -d /var/tmp/daas-hub-kube-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt_get source --download-only "kubernetes=$KUBE_SRC_VERSION"
dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null
cd src
export PATH="/usr/lib/go-1.19/bin:$PATH" GOPATH="$work/gopath" GOCACHE="$work/gocache"
export CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off
started=$(date +%s)
make WHAT=cmd/kube-apiserver
echo "kube-apiserver: built in $(( $(date +%s) - started )) s"
built="$(find _output -type f -name kube-apiserver -perm -u+x | head -n1)"
install -d -m 0755 "$KUBE_CACHE_DIR"
install -m 0755 "$built" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$binary"
