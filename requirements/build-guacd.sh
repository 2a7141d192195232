#!/bin/bash
# Build guacd (Apache Guacamole server) from its release source into a cache folder
# outside the repository, once: `make guacd` calls it (docs/desktops.md).
#
#   requirements/build-guacd.sh TARBALL SHA256 CACHE_DIR
#
# CACHE_DIR/sbin/guacd exists afterwards; a second run with the same tarball does
# nothing but install guacd's FreeRDP plugin (CACHE_DIR/freerdp2/*.so, which RDP
# audio, drives and printing need) where FreeRDP looks for its add-ins. The build runs in a temporary folder and is moved into place only when
# it is complete, so an interrupted build is never mistaken for a cached one.
set -euo pipefail

tarball=$1 sha=$2 cache=$3

cached() {
  [ -x "$cache/sbin/guacd" ] && [ -d "$cache/freerdp2" ] && [ "$(cat "$cache/.source-sha256" 2>/dev/null)" = "$sha" ]
}

# FreeRDP loads add-ins only from its own library folder, not from guacd's prefix
install_freerdp_plugins() {
  local addins
  addins="$(pkg-config --variable=libdir freerdp2)/freerdp2"
  install -d -m 0755 "$addins"
  install -m 0644 "$cache"/freerdp2/*.so "$addins/"
  echo "guacd: FreeRDP plugin installed in $addins"
}

if cached; then
  echo "guacd: cached in $cache"
  install_freerdp_plugins
  exit 0
fi
if [ ! -r "$tarball" ]; then
  echo "guacd: the source $tarball is missing (set GUACD_TARBALL to the guacamole-server-1.6.0 release tarball)" >&2
  exit 1
fi
actual=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$actual" != "$sha" ]; then
  echo "guacd: $tarball has sha256 $actual, expected $sha: not building from it" >&2
  exit 1
fi

umask 022
parent=$(dirname "$cache")
install -d -m 0755 "$parent"
exec 9>"$parent/.$(basename "$cache").lock"
flock 9
if cached; then
  echo "guacd: cached in $cache"
  install_freerdp_plugins
  exit 0
fi
work=$(mktemp -d "$parent/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
staging="$cache.new"
rm -rf "$staging"
tar -xzf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
cd "$src"
echo "guacd: building from $tarball into $cache"
autoreconf -fi >"$work/autoreconf.log" 2>&1 || { tail -n 40 "$work/autoreconf.log" >&2; exit 1; }
# the prefix is the final folder (guacd finds its protocol plugins there); DESTDIR stages it
./configure --prefix="$cache" --disable-guacenc --disable-guaclog >"$work/configure.log" 2>&1 \
  || { tail -n 40 "$work/configure.log" >&2; exit 1; }
for proto in VNC RDP SSH; do
  if ! grep -Eq "^ *$proto \.+ yes" "$work/configure.log"; then
    echo "guacd: configure found no $proto support (see the build dependencies in requirements/apt-guacd.txt):" >&2
    grep -E '^ *(RDP|SSH|VNC|Kubernetes|Telnet) ' "$work/configure.log" >&2 || true
    exit 1
  fi
done
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log" >&2; exit 1; }
make install DESTDIR="$work/root" >"$work/install.log" 2>&1 || { tail -n 40 "$work/install.log" >&2; exit 1; }
mv "$work/root$cache" "$staging"
# `make install` put the FreeRDP plugin under the system's FreeRDP folder (in DESTDIR): keep it
install -d -m 0755 "$staging/freerdp2"
find "$work/root" -path '*/freerdp2/*.so' -exec cp -a {} "$staging/freerdp2/" \;
if ! ls "$staging"/freerdp2/*.so >/dev/null 2>&1; then
  echo "guacd: the build made no FreeRDP plugin (see $work/install.log)" >&2
  exit 1
fi
echo "$sha" >"$staging/.source-sha256"
rm -rf "$cache"
mv "$staging" "$cache"
echo "guacd: built $("$cache/sbin/guacd" -v 2>&1 | head -n1 || true) in $cache"
install_freerdp_plugins
