#!/usr/bin/env bash
# Mutation testing with mutmut over the pool's core modules (not part of CI: slow).
#
# Each module is mutated on its own, in a scratch copy of the project, against the fast
# unit tests that guard it, so one module's run never waits for another's tests.
#
# Usage:  benchmarks/mutation.sh [MODULE ...]      e.g. benchmarks/mutation.sh _errors _quota
#         (no argument: every module below)
# Env:    PYTHON           interpreter with mutmut installed (pip install -e '.[mutation]')
#         MUTATION_DIR     scratch directory (default /tmp/gemini-pool-mutation)
#         MUTATION_JOBS    parallel mutants (default 2)
#         MUTATION_BUDGET  seconds allowed per module before it is stopped (default 1800)
#
# For each module it prints mutmut's counts and the score (killed / (killed + survived),
# timeouts count as killed), and lists the surviving mutants; `mutmut show NAME` in
# $MUTATION_DIR/MODULE shows one. benchmarks/mutation_equivalent.md lists the survivors
# judged equivalent, with the reason.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
MUTMUT=("$PYTHON" -m mutmut)
WORK=${MUTATION_DIR:-/tmp/gemini-pool-mutation}
JOBS=${MUTATION_JOBS:-2}
BUDGET=${MUTATION_BUDGET:-1800}

# module -> the unit tests that guard it (fast, no emulator where possible)
declare -A TESTS=(
  [_errors]="tests/unit_tests/test_errors.py tests/unit_tests/test_errors_edges.py tests/unit_tests/test_google_errors.py"
  [_quota]="tests/unit_tests/test_quota_window.py tests/unit_tests/test_quota_booking.py tests/unit_tests/test_scheduler.py"
  [_scheduler]="tests/unit_tests/test_scheduler_edges.py tests/unit_tests/test_scheduler.py tests/unit_tests/test_quota_booking.py"
  [_scheduler_types]="tests/unit_tests/test_scheduler_edges.py tests/unit_tests/test_scheduler.py tests/unit_tests/test_cooldown_floor.py"
  [_scheduler_keys]="tests/unit_tests/test_scheduler_edges.py tests/unit_tests/test_scheduler.py"
  [_scheduler_choose]="tests/unit_tests/test_scheduler_edges.py tests/unit_tests/test_scheduler.py tests/unit_tests/test_quota_booking.py"
  [_failover]="tests/unit_tests/test_scheduler.py tests/integration_tests/test_pool_failover.py"
  [_cache]="tests/unit_tests/test_cache.py"
  [_cache_codec]="tests/unit_tests/test_cache.py"
  [_cache_store]="tests/unit_tests/test_cache.py"
  [_usage_handler]="tests/unit_tests/test_usage.py"
  [_usage_ledger]="tests/unit_tests/test_usage_ledger.py tests/unit_tests/test_usage.py"
  [_usage_limits]="tests/unit_tests/test_usage_limits_edges.py tests/unit_tests/test_usage_ledger.py tests/unit_tests/test_usage.py"
  [_usage_prices]="tests/unit_tests/test_usage_prices_edges.py tests/unit_tests/test_usage.py"
  [_usage_record]="tests/unit_tests/test_usage.py tests/unit_tests/test_usage_ledger.py"
)
ORDER=(_errors _quota _scheduler _scheduler_types _scheduler_keys _scheduler_choose _failover
       _cache _cache_codec _cache_store _usage_handler _usage_ledger _usage_limits _usage_prices _usage_record)

modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=("${ORDER[@]}")

for mod in "${modules[@]}"; do
  tests=${TESTS[$mod]:-}
  if [ -z "$tests" ]; then
    echo "unknown module $mod; one of: ${ORDER[*]}" >&2
    exit 2
  fi
  dir="$WORK/$mod"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$ROOT/langchain_gemini_pool" "$ROOT/tests" "$ROOT/pyproject.toml" "$dir/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  {
    echo
    echo "[tool.mutmut]"
    echo "source_paths = [\"langchain_gemini_pool\"]"
    echo "only_mutate = [\"langchain_gemini_pool/$mod.py\"]"
    printf 'pytest_add_cli_args_test_selection = ['
    sep=""
    for t in $tests; do printf '%s"%s"' "$sep" "$t"; sep=", "; done
    echo "]"
    echo 'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x"]'
    echo "use_git_change_detection = false"
  } >>"$dir/pyproject.toml"

  echo "== $mod: mutating langchain_gemini_pool/$mod.py against: $tests"
  start=$(date +%s)
  status=0
  (cd "$dir" && env -u PYTHONPATH timeout "$BUDGET" "${MUTMUT[@]}" run --max-children "$JOBS" \
      >"$dir/run.log" 2>&1) || status=$?
  took=$(( $(date +%s) - start ))
  [ "$status" -eq 124 ] && echo "   stopped by the time budget (${BUDGET}s): counts are partial"
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && echo "   mutmut exited $status (see $dir/run.log)"
  (cd "$dir" && env -u PYTHONPATH "${MUTMUT[@]}" results --all true >"$dir/results.txt" 2>&1) || true
  "$PYTHON" - "$dir/results.txt" "$mod" "$took" <<'PY'
import collections, sys
path, mod, took = sys.argv[1], sys.argv[2], sys.argv[3]
counts = collections.Counter()
survivors = []
for line in open(path, encoding="utf-8"):
    name, sep, status = line.strip().rpartition(": ")
    if not sep:
        continue
    counts[status] += 1
    if status == "survived":
        survivors.append(name)
killed = counts["killed"] + counts["timeout"]
tested = killed + counts["survived"]
score = 100.0 * killed / tested if tested else 0.0
print(f"   {mod}: {sum(counts.values())} mutants, killed {counts['killed']}, "
      f"timeout {counts['timeout']}, survived {counts['survived']}, "
      f"no tests {counts['no tests']}, not checked {counts['not checked']}, "
      f"other {sum(v for k, v in counts.items() if k not in {'killed','timeout','survived','no tests','not checked'})}; "
      f"score {score:.1f}% in {took}s")
for name in survivors:
    print(f"   survived: {name}")
PY
done
