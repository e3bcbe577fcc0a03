#!/bin/bash
# numba caching from an installed wheel in a read-only site-packages. Run as root (it runs
# the quickstart as user nobody through setpriv, since root writes through any permission):
#
#   PY=/path/to/python benchmarks/check_readonly_install.sh
#
# Builds a wheel of this checkout, installs it into a fresh venv whose other packages come
# from PY's environment (a .pth file), removes write permission from the installed package,
# then runs the quickstart under several cache set-ups and prints, for each, whether it
# finished and which kernels numba loaded from its cache or compiled and saved (numba's own
# NUMBA_DEBUG_CACHE lines). Results: benchmarks/README.md.
set -e
SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3}
WORK=${WORK:-/tmp/clustersim-readonly}
DEPS=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$WORK" /tmp/clustersim-numba-65534
mkdir -p "$WORK/src" "$WORK/home" "$WORK/run"
cp -r "$SRC"/setup.py "$SRC"/MANIFEST.in "$SRC"/pyproject.toml "$SRC"/README.md \
      "$SRC"/clustersim "$SRC"/topologies "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
(cd "$WORK/src" && "$PY" -m pip wheel -q --no-deps -w "$WORK/wheel" . >"$WORK/build.log" 2>&1)
"$PY" -m venv "$WORK/venv"
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" > "$SITE/dependencies.pth"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WORK"/wheel/clustersim-*.whl
echo "presets in the wheel: $(ls "$SITE/clustersim/topologies" | wc -l)"
chmod -R a-w "$SITE/clustersim"
touch "$WORK/installed"; sleep 1
cp "$SRC/experiments/quickstart.yaml" "$WORK/run/"
chown -R nobody "$WORK/home" "$WORK/run"

run() {  # a label, then the environment of the run
  local label=$1; shift
  local start end rc=0
  start=$(date +%s.%N)
  (cd "$WORK/run" && env "$@" NUMBA_DEBUG_CACHE=1 PATH=/usr/bin:/bin \
     setpriv --reuid 65534 --regid 65534 --clear-groups \
     "$WORK/venv/bin/clustersim" run quickstart.yaml --out "$WORK/run/out" \
     >"$WORK/run.log" 2>&1) || rc=$?
  end=$(date +%s.%N)
  printf '%-42s exit %s %6.2f s, rows ok %s; kernels loaded from cache %s, compiled %s\n' \
    "$label" "$rc" "$(echo "$end - $start" | bc)" \
    "$(grep -c ',ok,' "$WORK/run/out/results.csv" 2>/dev/null || echo 0)" \
    "$(grep -c 'data loaded' "$WORK/run.log")" "$(grep -c 'data saved' "$WORK/run.log")"
  grep -m1 -o "data loaded from '[^']*'\|data saved to '[^']*'" "$WORK/run.log" \
    | sed 's/^/    e.g. /' || true
  [ "$rc" = 0 ] || tail -5 "$WORK/run.log"
}

run "HOME writable, cold cache" HOME="$WORK/home"
run "HOME writable, warm cache" HOME="$WORK/home"
run "XDG_CACHE_HOME empty (HOME/.cache), warm" HOME="$WORK/home" XDG_CACHE_HOME=
run "HOME not writable (temp dir), cold" HOME=/nonexistent
run "HOME not writable (temp dir), warm" HOME=/nonexistent
run "NUMBA_CACHE_DIR chosen by the user, cold" HOME="$WORK/home" NUMBA_CACHE_DIR="$WORK/home/mine"
run "NUMBA_CACHE_DIR chosen by the user, warm" HOME="$WORK/home" NUMBA_CACHE_DIR="$WORK/home/mine"
# Nothing writable at all cannot be staged here (tempfile falls back to the current
# directory); tests/test_numba_cache.py checks that kernels then compile without a cache.
echo "files written inside the installed package: $(find "$SITE/clustersim" -newer "$WORK/installed" -type f | wc -l)"
