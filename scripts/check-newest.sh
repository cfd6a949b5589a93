#!/usr/bin/env bash
# Does the project still work with the newest release of every dependency?
#
#   scripts/check-newest.sh            # report only
#   scripts/check-newest.sh --update   # and, when it passes, rewrite constraints.txt to those versions
#
# Makes a fresh virtual environment, installs torch at the version constraints.txt pins (its CPU
# build here; torch moves with the cluster's CUDA, on purpose) and then the project with
# `.[dev]`, ignoring constraints.txt, so pip picks the newest release of everything else. Runs the
# fast subset and the preprocessing example there, then prints one line: passed or failed, and
# the versions that moved from constraints.txt. After --update, run the whole suite under the
# new constraints (.ci/run) before committing them.
set -euo pipefail
cd "$(dirname "$0")/.."
update=0
case "${1:-}" in
    --update) update=1 ;;
    "") ;;
    *) echo "usage: scripts/check-newest.sh [--update]" >&2; exit 2 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/check-newest.XXXXXX")
log=$work/log.txt
torch_pin=$(grep -E '^torch==' constraints.txt)
py=$work/venv/bin/python
say() { echo "check-newest: $*"; }
run() {  # run WHAT CMD...: output to the log; on failure, one line and the log's path
    if ! "$@" >>"$log" 2>&1; then
        say "FAILED at $1 ($2 ...); log: $log"
        [[ -s "$work/moved.txt" ]] && say "moved: $(cat "$work/moved.txt")"
        exit 1
    fi
}
run python3 -m venv "$work/venv"
run "$py" -m pip install -q --upgrade pip
run "$py" -m pip install -q "$torch_pin"
# the newest of everything else: a fresh environment and no -c constraints.txt (torch, installed
# already, is kept: pip upgrades nothing it need not)
run "$py" -m pip install -q -e '.[dev]'
scripts/constraints-from-env.sh "$py" > "$work/constraints.txt"
# "name old -> new" for each pin that changed, "name new (new)" for each package added
python3 - constraints.txt "$work/constraints.txt" > "$work/moved.txt" <<'PY'
import sys
def pins(path):
    out = {}
    for line in open(path):
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==", 1)
            out[name.lower()] = version
    return out
old, new = pins(sys.argv[1]), pins(sys.argv[2])
moved = [f"{n} {old[n]} -> {v}" for n, v in sorted(new.items()) if n in old and old[n] != v]
moved += [f"{n} {v} (new)" for n, v in sorted(new.items()) if n not in old]
moved += [f"{n} {v} (gone)" for n, v in sorted(old.items()) if n not in new]
print(", ".join(moved) or "nothing")
PY
run "$py" -m pytest -q -m "not integration" -p no:cacheprovider
run "$py" -m preprocess.example --output "$work/example"
summary=$(grep -E '^[0-9]+ passed' "$log" | tail -n 1)
line="passed (fast subset: $summary; preprocess.example ran); moved: $(cat "$work/moved.txt")"
if (( update )); then
    cp "$work/constraints.txt" constraints.txt
    line="$line; constraints.txt rewritten: run .ci/run before committing it"
fi
say "$line"
rm -rf "$work"
