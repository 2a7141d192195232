#!/bin/bash
# Write images/NAME/requirements.lock from images/NAME/requirements.in: the exact versions
# of what the technique image adds, resolved against the base's lock (requirements/demo.lock,
# used as constraints so the base's versions never move). `make images-lock` calls it for
# every technique image; it needs the package index.
#   PYTHON   the Python to resolve with (the base's minor version, default python3)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
PYTHON=${PYTHON:-python3}
for name in "$@"; do
  in=$here/$name/requirements.in
  [ -f "$in" ] || { echo "images/lock.sh: no $in" >&2; exit 1; }
  report=$(mktemp)
  "$PYTHON" -m pip install -q --dry-run --ignore-installed --report "$report" \
    -c "$repo/requirements/demo.lock" -r "$in" >/dev/null
  {
    echo "# Locked set for images/$name (from requirements.in); regenerate with \`make images-lock\`."
    echo "# Resolved with requirements/demo.lock as constraints: packages the base has keep the base's versions."
    "$PYTHON" - "$report" "$repo/requirements/demo.lock" <<'PY'
import json, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
report = json.load(open(sys.argv[1]))
for item in sorted(report["install"], key=lambda i: norm(i["metadata"]["name"])):
    print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]}')
PY
  } > "$here/$name/requirements.lock"
  rm -f "$report"
  echo "images/$name/requirements.lock: $(grep -vc '^#' "$here/$name/requirements.lock") packages"
done
