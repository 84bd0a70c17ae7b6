# outboxd — build, test and local-stack targets. `make help` lists them.
PREFIX    ?= /usr/local
BUILD     ?= build
CC        ?= cc
PKGS      := libpq libevent libevent_openssl openssl libcurl rdkafka libcyaml jansson
VERSION   := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
# The newest migration this build expects; /health/ready compares it with the database.
SCHEMA_VERSION := $(shell ls migrations 2>/dev/null | sed -nE 's/^0*([0-9]+)_.*\.sql$$/\1/p' | sort -n | tail -n 1)

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -Wstrict-prototypes -Wmissing-prototypes
CPPFLAGS += -D_GNU_SOURCE -DOUTBOXD_VERSION='"$(VERSION)"' -DOUTBOXD_DATADIR='"$(PREFIX)/share/outboxd"' -DOUTBOXD_SCHEMA_VERSION=$(or $(SCHEMA_VERSION),0) -Idispatcher
ALL_CFLAGS = -std=c11 -pthread $(WARN) $(CFLAGS) $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm -pthread $(EXTRA_LDFLAGS)

# V=1 shows whole compiler command lines
V ?= 0
ifeq ($(V),0)
Q := @
SAY = @printf '  %-7s %s\n'
else
Q :=
SAY = @true
endif

SRCS      := $(wildcard dispatcher/*.c)
LIB_SRCS  := $(filter-out dispatcher/main.c,$(SRCS))
OBJS      := $(patsubst dispatcher/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIB_OBJS  := $(patsubst dispatcher/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

.PHONY: all deps asan unit unit-bins unit-valgrind test test-asan install clean run help \
        kafka-up kafka-down bench smoke load-test go-no-go test-faults

all: $(BUILD)/outboxd

help:
	@echo "make deps            install system packages (Debian) needed to build and test"
	@echo "make                 build $(BUILD)/outboxd"
	@echo "make asan            build build-asan/outboxd with ASan+UBSan"
	@echo "make test            every test: C unit, pgTAP, integration (installs deps, starts its own services)"
	@echo "make test-faults     the fault suite: tests/integration/test_fault_*.py and the outage cases"
	@echo "make test-asan       the dispatcher's integration suites against the ASan+UBSan build"
	@echo "make format-check    C sources against .clang-format (make format rewrites them)"
	@echo "make cppcheck        static analysis; suppressions in ops/scripts/cppcheck.sh"
	@echo "make run             local stack: PostgreSQL + smtp-sink (+ Kafka with KAFKA=1) + outboxd; RESET=1 starts empty"
	@echo "make kafka-up/down   a local single-node Apache Kafka 4 (KRaft) on 127.0.0.1:\$$KAFKA_PORT"
	@echo "make bench           benchmarks under tests/bench (print ratios, not pass/fail)"
	@echo "make smoke           smoke tests against a running outboxd (GOLIVE_ENV=local: make run's stack)"
	@echo "make load-test       the go-live load scenarios (SCENARIO=all SCALE=1) with a JSON + HTML report"
	@echo "make go-no-go        the go-live plan's Go/No-Go table and decision (GOLIVE_ENV=local)"
	@echo "make install PREFIX=/usr/local"

deps:
	@bash ops/scripts/deps.sh

$(BUILD)/obj/%.o: dispatcher/%.c $(wildcard dispatcher/*.h) | $(BUILD)/obj
	$(SAY) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/obj/telemetry.o: $(wildcard migrations/*.sql)

$(BUILD)/outboxd: $(OBJS)
	$(SAY) LINK $@
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS) tests/unit/testutil.h | $(BUILD)/unit
	$(SAY) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJS) $(LDFLAGS) $(LDLIBS)

$(BUILD)/obj $(BUILD)/unit:
	mkdir -p $@

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" all unit-bins

unit-bins: $(UNIT_BINS)

# The dispatcher, lease-fault, operate and Kafka suites against build-asan/outboxd. A
# dispatcher still running at the end of a test gets SIGTERM (so LeakSanitizer runs at its
# exit), and a sanitizer report in any dispatcher's log fails the test
# (tests/integration/conftest.py).
test-asan: asan
	OUTBOXD_BIN=$(CURDIR)/build-asan/outboxd OUTBOXD_SANITIZED=1 /usr/bin/python3 -m pytest \
	    -p no:cacheprovider -q tests/integration/test_dispatcher.py tests/integration/test_fault_lease.py \
	    tests/integration/test_operate.py tests/integration/test_kafka_mirror.py

# The fault suite: every tests/integration/test_fault_*.py (kill -9, PostgreSQL restart and
# HA failover, Kafka cluster failover, leases...) plus the outage cases that live beside the
# fixtures they need. Each case bounds its own waits; they also run in `make test`.
FAULT_CASES = tests/integration/test_fault_*.py \
    "tests/integration/test_operate.py::test_breaker_bounds_a_30s_relay_outage" \
    "tests/integration/test_operate.py::test_breaker_with_relay_stopped_then_back" \
    "tests/integration/test_kafka_mirror.py::test_broker_outage_loses_nothing_and_keeps_order" \
    "tests/integration/test_kafka_mirror.py::test_leader_killed_standby_takes_over"
test-faults: deps all
	@bash ops/scripts/kafka.sh fetch || echo "make test-faults: the Kafka jars could not be fetched" >&2
	/usr/bin/python3 -m pytest -p no:cacheprovider -q -ra $(FAULT_CASES)

# C unit tests: pure logic, no database or network.
unit: $(UNIT_BINS)
	@bash tests/unit/run.sh $(UNIT_BINS)

unit-valgrind: $(UNIT_BINS)
	@VALGRIND=1 bash tests/unit/run.sh $(UNIT_BINS)

# Everything, one command: installs what is missing (deps.sh, quick when all is there) and
# the Kafka jars, builds in a fresh make (pkg-config must see the installed libraries), then
# starts and removes its own PostgreSQL, SMTP servers and Kafka.
test: deps
	@bash ops/scripts/kafka.sh fetch || echo "make test: the Kafka jars could not be fetched; the Kafka suites will fail" >&2
	@$(MAKE) --no-print-directory all unit-bins
	@$(MAKE) --no-print-directory format-check cppcheck
	@bash tests/run.sh

# The product on a local stack (ops/scripts/run-local.sh); RESET=1 empties .local first.
run: deps
	@$(MAKE) --no-print-directory all
	@if [ "$${KAFKA:-0}" = 1 ]; then bash ops/scripts/kafka.sh fetch; fi
	@bash ops/scripts/run-local.sh

kafka-up:
	@bash ops/scripts/kafka.sh up

kafka-down:
	@bash ops/scripts/kafka.sh down

# Every C source is under the pinned .clang-format; `make format` rewrites them.
C_STYLE_FILES = $(wildcard dispatcher/*.c dispatcher/*.h tests/unit/*.c tests/unit/*.h)

format:
	clang-format -i $(C_STYLE_FILES)

format-check:
	@command -v clang-format >/dev/null || { echo "clang-format missing: run make deps" >&2; exit 1; }
	@clang-format --dry-run --Werror $(C_STYLE_FILES)
	@echo "format-check: $(words $(C_STYLE_FILES)) files clean"

cppcheck:
	@bash ops/scripts/cppcheck.sh
	@echo "cppcheck: clean"

bench: all
	@bash tests/bench/run.sh

# Go-live kit (docs/operations.md, "Going live"); settings per environment in ops/env/.
GOLIVE_ENV ?= local
smoke:
	@bash ops/scripts/smoke-tests.sh $(GOLIVE_ENV)

# The release in ops/PREVIOUS_RELEASE against the current schema, under traffic and back.
rollback-drill: all
	@bash ops/scripts/rollback-drill.sh $(GOLIVE_ENV)

# The container image built with podman (a debootstrap base when BASE is unset) and run: one email.
image:
	@bash ops/scripts/image-build.sh $(IMAGE_TAG)

# Findings by severity for GOLIVE_ENV; exit 1 on a critical one.
security-audit: all
	@bash ops/scripts/security-audit.sh $(GOLIVE_ENV)

# Point-in-time restore under traffic on a throwaway cluster; prints RPO and RTO.
dr-drill: all
	@bash ops/scripts/dr-drill.sh $(GOLIVE_ENV)

load-test: all
	@bash ops/scripts/load-test.sh $(or $(SCENARIO),all) $(GOLIVE_ENV) --scale $(or $(SCALE),1)

go-no-go: all
	@bash ops/scripts/go-no-go.sh $(GOLIVE_ENV) $(GO_NO_GO_ARGS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/outboxd/migrations $(DESTDIR)$(PREFIX)/share/outboxd/sql
	install -m 0755 $(BUILD)/outboxd $(DESTDIR)$(PREFIX)/bin/outboxd
	install -m 0644 migrations/*.sql $(DESTDIR)$(PREFIX)/share/outboxd/migrations/
	install -m 0644 sql/*.sql $(DESTDIR)$(PREFIX)/share/outboxd/sql/

clean:
	rm -rf build build-asan
