# Shared by the scripts that install a real component into a venv from a per-machine wheel cache
# (.ci/alfworld.sh, .ci/llamacpp.sh). Sourced, not run:
#   source "$(dirname "$0")/wheels.sh" SCRIPT "WHAT" "WHICH TESTS" PATH/TO/venv/bin/python
# Sets PY, VENV_BIN (first on PATH, so a build's bare `python`, cmake or pip is this venv's),
# WHEEL_CACHE (${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}) and STRICT (CI=true), and
# defines fail, need_build_tools and pin_constraints.
# Under CI a failure exits 1 with its cause: CI must not go green without the component. Elsewhere
# it warns and exits 0, and the component's tests skip with the reason shown.

WHEELS_SCRIPT=$1 WHEELS_WHAT=$2 WHEELS_TESTS=$3
PY=${4:?usage: bash .ci/$WHEELS_SCRIPT.sh PATH/TO/venv/bin/python}
WHEEL_CACHE=${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}

case "${CI:-}" in ""|0|false|False|FALSE|no) STRICT=0 ;; *) STRICT=1 ;; esac
fail() {
  if [ "$STRICT" = 1 ]; then
    echo "$WHEELS_SCRIPT.sh: ERROR: $WHEELS_WHAT cannot be installed: $*. CI=true needs it ($WHEELS_TESTS would otherwise skip)." >&2
    exit 1
  fi
  echo "$WHEELS_SCRIPT.sh: WARNING: $*; $WHEELS_TESTS will skip" >&2
  exit 0
}

"$PY" -c "" 2>/dev/null || fail "no working python at $PY"
VENV_BIN=$(cd "$(dirname "$PY")" && pwd)
[ -x "$VENV_BIN/python" ] || fail "$VENV_BIN has no \`python\` for a build to call; pass a venv's bin/python"
export PATH="$VENV_BIN:$PATH"

# need_build_tools PACKAGE: g++, cmake and make on PATH, installed with apt-get when root can.
need_build_tools() {
  local tool missing=()
  for tool in g++ cmake make; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} = 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "$WHEELS_SCRIPT.sh: installing g++, cmake and make to build $1" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ cmake make >&2; } \
      || fail "building $1 needs ${missing[*]}, and apt-get could not install them"
    for tool in g++ cmake make; do
      command -v "$tool" >/dev/null || fail "building $1 needs $tool, which is not on PATH even after apt-get installed it"
    done
  else
    fail "building $1 needs ${missing[*]} on PATH (install them and rerun)"
  fi
}

# pin_constraints: a pip constraints file ($CONSTRAINTS) holding the venv's versions of the
# packages given, so installing the component keeps them (and what was built against them) as they are.
pin_constraints() {
  CONSTRAINTS=$(mktemp)
  trap 'rm -f "$CONSTRAINTS"' EXIT
  local pattern
  pattern=$(IFS='|'; echo "$*")
  "$PY" -m pip freeze 2>/dev/null | grep -iE "^($pattern)==" > "$CONSTRAINTS" || true
}
