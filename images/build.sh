#!/bin/bash
# Build daas-hub's container images (docs/images.md). Called by `make images`; usable alone:
#
#   images/build.sh base-os            the Debian base, made with mmdebstrap (no registry needed)
#   images/build.sh wheels             the wheelhouse: every locked Python package, once
#   images/build.sh image NAME...      build images/NAME/Containerfile (base first, then the rest)
#   images/build.sh all                all three, every image under images/
#   images/build.sh list               the images' directory names, in build order
#
# Settings (environment):
#   ENGINE        podman (default) or docker; docker only when podman is missing
#   IMAGE_PREFIX  name prefix of the tags (default localhost/daas-hub): PREFIX/NAME:VERSION
#   VERSION       the tag (default: the project's version in pyproject.toml)
#   CACHE_DIR     where the Debian tarball and the wheelhouse are kept (default /var/cache/daas-hub)
#   OS_BASE       image the base and hub images are built FROM (default: the mmdebstrap base,
#                 localhost/daas-hub/debian:bookworm-minbase; a site may set a pinned registry image)
#   HUB_BASE      image the hub is built FROM (default: OS_BASE; a site sets quay.io/jupyterhub/k8s-hub:4.4.0)
#   PYTHON        Python used to fill the wheelhouse (default python3); must be the base's minor version
#   WHEELHOUSE    set to "" to install from the package index inside the build instead
#                 (the default with docker, whose build has no volume mounts)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

if [ -z "${ENGINE:-}" ]; then
  if command -v podman >/dev/null; then ENGINE=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  else echo "images/build.sh: neither podman nor a running docker found; run 'make apt-images' first" >&2; exit 1
  fi
fi
PYTHON=${PYTHON:-python3}
VERSION=${VERSION:-$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")}
IMAGE_PREFIX=${IMAGE_PREFIX:-localhost/daas-hub}
CACHE_DIR=${CACHE_DIR:-/var/cache/daas-hub}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_OS=localhost/daas-hub/debian:$SUITE-minbase
OS_BASE=${OS_BASE:-$LOCAL_OS}
HUB_BASE=${HUB_BASE:-$OS_BASE}
# the wheelhouse is mounted into builds with podman build -v; docker builds install from the index
if [ "$ENGINE" = podman ]; then WHEELHOUSE=${WHEELHOUSE-$CACHE_DIR/wheels/cp311}; else WHEELHOUSE=${WHEELHOUSE:-}; fi
LOCKS=("$repo/requirements/demo.lock" "$repo/requirements/build.txt")

say() { echo "images/build.sh: $*" >&2; }

# The images' directories in build order: base, then what is built FROM it.
list_images() {
  echo base
  echo desktop
  echo hub
  for d in "$here"/*/; do
    name=$(basename "$d")
    case $name in base|desktop|hub) continue;; esac
    [ -f "$d/Containerfile" ] && echo "$name"
  done
}

base_os() {
  local tar=$CACHE_DIR/debian-$SUITE-minbase.tar
  if [ "$OS_BASE" != "$LOCAL_OS" ]; then say "OS_BASE=$OS_BASE: no local Debian base needed"; return; fi
  if [ ! -s "$tar" ]; then
    say "making the Debian $SUITE base with mmdebstrap into $tar"
    install -d -m 0755 "$CACHE_DIR"
    mmdebstrap --quiet --format=tar --variant=minbase --include=ca-certificates "$SUITE" "$tar.part" "$MIRROR"
    mv "$tar.part" "$tar"
  fi
  if ! $ENGINE image inspect "$LOCAL_OS" >/dev/null 2>&1 || [ "$tar" -nt "$CACHE_DIR/.imported" ]; then
    say "importing $tar as $LOCAL_OS"
    $ENGINE import --change 'CMD ["/bin/bash"]' "$tar" "$LOCAL_OS" >/dev/null
    touch "$CACHE_DIR/.imported"
  fi
}

wheels() {
  [ -n "$WHEELHOUSE" ] || { say "WHEELHOUSE is empty: builds install from the package index"; return; }
  local reqs=("${LOCKS[@]}") f
  for f in "$here"/*/requirements.lock; do [ -f "$f" ] && reqs+=("$f"); done
  local sum; sum=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$WHEELHOUSE/.locks.sha" 2>/dev/null)" = "$sum" ]; then return; fi
  local pyv; pyv=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  if [ "$pyv" != "$(basename "$WHEELHOUSE")" ]; then
    say "$PYTHON is $pyv but the wheelhouse is for $(basename "$WHEELHOUSE") (Debian $SUITE's python3); set PYTHON"
    exit 1
  fi
  install -d -m 0755 "$WHEELHOUSE"
  # only the pins that have no wheel yet go to the package index
  local missing; missing=$(mktemp)
  "$PYTHON" - "$WHEELHOUSE" "${reqs[@]}" > "$missing" <<'PY'
import re, sys
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
have = {norm(w.name.split("-")[0]) + "==" + w.name.split("-")[1] for w in Path(sys.argv[1]).glob("*.whl")}
pins = set()
for f in sys.argv[2:]:
    for line in open(f):
        line = line.split("#")[0].strip()
        if "==" in line:
            pins.add(line)
for pin in sorted(pins):
    name, version = pin.split("==")
    if f"{norm(name)}=={version}" not in have:
        print(pin)
PY
  if [ -s "$missing" ]; then
    say "filling the wheelhouse $WHEELHOUSE: $(wc -l < "$missing") packages"
    # --no-deps: the locks are complete; a package missing from them fails the image build
    # (pip install --no-index), which is how an unlocked dependency is caught.
    "$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WHEELHOUSE" -r "$missing"
  fi
  rm -f "$missing"
  echo "$sum" > "$WHEELHOUSE/.locks.sha"
}

from_for() {
  case $1 in
    base) echo "$OS_BASE";;
    hub) echo "$HUB_BASE";;
    *) echo "$IMAGE_PREFIX/base:$VERSION";;
  esac
}

build_image() {
  local name=$1 file=$here/$1/Containerfile
  [ -f "$file" ] || { say "no images/$name/Containerfile"; exit 1; }
  local args=(build -f "$file" -t "$IMAGE_PREFIX/$name:$VERSION" --build-arg "BASE_IMAGE=$(from_for "$name")"
              --build-arg "DAAS_HUB_VERSION=$VERSION" --label "org.opencontainers.image.version=$VERSION")
  # docker's image format: OCI's has no SHELL instruction
  [ "$ENGINE" = podman ] && args+=(--format docker)
  if [ -n "$WHEELHOUSE" ]; then
    [ "$ENGINE" = podman ] || { say "the wheelhouse mount needs podman; with docker set WHEELHOUSE=''"; exit 1; }
    args+=(-v "$WHEELHOUSE:/wheels:ro")
  fi
  say "building $IMAGE_PREFIX/$name:$VERSION FROM $(from_for "$name")"
  local t0=$SECONDS
  $ENGINE "${args[@]}" "$repo"
  say "built $IMAGE_PREFIX/$name:$VERSION in $((SECONDS - t0)) s"
}

cmd=${1:-all}; shift || true
case $cmd in
  base-os) base_os;;
  wheels) wheels;;
  list) list_images;;
  image)
    [ $# -gt 0 ] || { say "image: name at least one image (images/build.sh list)"; exit 1; }
    for n in "$@"; do build_image "$n"; done;;
  all)
    base_os; wheels
    for n in $(list_images); do build_image "$n"; done;;
  *) say "unknown command $cmd (base-os, wheels, image NAME..., all, list)"; exit 1;;
esac
