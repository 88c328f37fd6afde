#!/usr/bin/env bash
# Resolver check for the Python versions pyproject's requires-python admits beyond the one CI runs
# (3.11): would every pin of the laptop set (requirements.txt, which includes the image's pins)
# install on CPython 3.12 and 3.13 from published wheels? Prints one line per version and the
# interpreter-specific wheels chosen; exits non-zero if either does not resolve.
#   bash scripts/python-versions.sh            (uses .venv/bin/pip; PIP=... to change)
# pip's --python-version needs --only-binary=:all:. A few dependencies are published only as
# sdists of pure Python (kfp and friends, hydra's antlr4 runtime): their py3-none-any wheels are
# built here first (the version-independent part of an install) and offered with --find-links.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kfp=$(grep -E '^kfp==' requirements-image.txt | cut -d= -f3)
"$PIP" wheel --quiet --no-deps -w "$work/wheels" "kfp==$kfp" "kfp-kubernetes==$kfp" "kfp-pipeline-spec==$kfp" \
  "kfp-server-api==$kfp" "antlr4-python3-runtime==4.9.3" 2>&1 | grep -v '^WARNING: Location' || true
for version in 3.12 3.13; do
  "$PIP" install --dry-run --ignore-installed --quiet --python-version "$version" --only-binary=:all: \
    --find-links "$work/wheels" --target "$work/target-$version" --report "$work/report-$version.json" \
    -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
  "$PYTHON" - "$work/report-$version.json" "$version" <<'PY'
import json, sys
report, version = json.load(open(sys.argv[1])), sys.argv[2]
items = report["install"]
tag = "cp" + version.replace(".", "")
specific = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items
                  if f"-{tag}-" in i["download_info"]["url"])
print(f"Python {version}: {len(items)} packages resolve from wheels (pip {report['pip_version']}); "
      f"{len(specific)} {tag} wheels: {', '.join(specific)}")
PY
done
