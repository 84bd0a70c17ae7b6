#!/usr/bin/env bash
# Static analysis of the C sources (`make cppcheck`, part of `make test`). Every
# suppression lives here, with its reason; keep the list short.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cppcheck >/dev/null || { echo "cppcheck missing: run make deps" >&2; exit 1; }
suppress=(
  # Every variadic list of ours (log_write fields, metrics_child label values) ends with
  # NULL. glibc defines NULL as ((void *)0), a pointer, so the terminator has the type
  # va_arg reads; the undefined behaviour cppcheck means needs a platform whose NULL is 0.
  --suppress=varFuncNullUB
  # schema_node() reads segs[j]/lens[j] only for j < n, after writing them: cppcheck does
  # not follow the loop bound.
  --suppress=uninitvar:dispatcher/config.c
  # hostile_doc() hands one string for every %s a test's format may hold (up to eight);
  # arguments beyond those the format uses are evaluated and ignored (C11 7.21.6.1p2).
  --suppress=wrongPrintfScanfArgNum:tests/unit/test_console_html.c
)
exec cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
  --inline-suppr "${suppress[@]}" -D_GNU_SOURCE -Idispatcher -Itests/unit dispatcher/ tests/unit/
