"""Structure rules the compiler cannot check: each library and each shared definition has
one home. A second copy creeping in fails here, naming the file."""
import glob
import subprocess
import os
import re

import pytest

from conftest import ROOT

DISPATCHER = os.path.join(ROOT, "dispatcher")


def sources():
    for path in sorted(glob.glob(os.path.join(DISPATCHER, "*.[ch]"))):
        with open(path, encoding="utf-8") as f:
            yield os.path.basename(path), f.read()


def files_matching(pattern):
    rx = re.compile(pattern, re.M)
    return sorted(name for name, text in sources() if rx.search(text))


def test_each_library_is_included_by_its_module_only():
    assert files_matching(r'^#include <librdkafka/rdkafka\.h>') == ["kafka.c"]
    # smtp_class.c holds the rule table that maps libcurl's result codes, next to the replies
    assert files_matching(r'^#include <curl/curl\.h>') == ["smtp_class.c", "smtp_curl.c"]
    assert files_matching(r'^#include <libpq-fe\.h>') == ["pg.c"]
    assert files_matching(r'^#include <cyaml/cyaml\.h>') == ["config.c"]


def test_one_monotonic_clock():
    assert files_matching(r'clock_gettime\(CLOCK_MONOTONIC') == ["clock.c"]
    assert files_matching(r'^static [a-z0-9_ ]+\bnow_(ms|s)\(void\)') == []


def test_one_reader_of_operator_files_and_of_host_port():
    # procstat.c reads /proc into a stack buffer on every scrape: kernel files, not the operator's
    assert files_matching(r'\bopen\([a-z_>-]+, O_RDONLY') == ["file.c", "procstat.c"]
    assert files_matching(r'memrchr\([a-z]+, \':\'') == ["hostport.c"]
    assert files_matching(r'outbox\.set_idle\(\$1') == ["wake.c"]


def test_lifecycle_events_are_written_in_one_place():
    hits = []
    for path in sorted(glob.glob(os.path.join(ROOT, "sql", "*.sql"))):
        with open(path, encoding="utf-8") as f:
            hits += [os.path.basename(path)] * len(re.findall(r"INSERT INTO outbox\.events\b", f.read()))
    assert hits == ["03_lifecycle.sql"], hits


LOG_SNIPPET = '#include "log.h"\nvoid f(const char *s, long long n);\nvoid f(const char *s, long long n)\n{\n\t(void)s;\n\t(void)n;\n\t%s;\n}\n'


def compiles(call, tmp_path):
    src = tmp_path / "snippet.c"
    src.write_text(LOG_SNIPPET % call)
    r = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", DISPATCHER, str(src)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0, r.stderr


@pytest.mark.parametrize("call, ok", [
    ('log_info("m", LOG_S("text", s), LOG_I("rows", n))', True),
    ('log_info("m", LOG_END)', True),
    ('log_info("m", LOG_I("rows", s))', False),   # a string where a number belongs
    ('log_info("m", LOG_S("text", n))', False),   # a number where a string belongs
    ('log_info("m", "stext", s)', False),         # the untyped form is gone
])
def test_log_fields_are_checked_by_the_compiler(call, ok, tmp_path):
    built, err = compiles(call, tmp_path)
    assert built == ok, err


def test_every_module_is_named_in_the_architecture():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    missing = [name for name, _ in sources() if name.endswith(".c") and f"`{name}`" not in text]
    assert missing == [], f"docs/architecture.md does not name {missing}"
