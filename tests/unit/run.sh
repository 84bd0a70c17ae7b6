#!/usr/bin/env bash
# Runs each C unit-test binary (under valgrind when VALGRIND=1) and prints one total line.
set -u
passed=0; failed=0; status=0
for bin in "$@"; do
  if [ "${VALGRIND:-0}" = 1 ]; then
    out=$(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
          --error-exitcode=99 --suppressions=tests/unit/valgrind.supp "$bin" 2>&1); rc=$?
  else
    out=$("$bin" 2>&1); rc=$?
  fi
  line=$(printf '%s\n' "$out" | grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
  [ -n "$line" ] || { p=0; f=1; }
  if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
    status=1; [ "$f" -eq 0 ] && f=1
    printf '%s\n' "$out" >&2
    echo "unit FAILED: $bin (exit $rc)" >&2
  fi
  passed=$((passed + p)); failed=$((failed + f))
done
echo "unit: $passed passed, $failed failed"
exit $status
