# xpimportd — hand-written Makefile. configure (from configure.ac) writes
# config.mk, which this file includes; on a fresh clone 'make' installs
# missing Debian packages (as root), runs autoreconf and configure itself.

NO_CONFIG_GOALS := deps clean distclean
ifeq ($(filter-out $(NO_CONFIG_GOALS),$(or $(MAKECMDGOALS),all)),)
else
include config.mk
endif

CONFIGURE_FLAGS ?=
PYTHON ?= /usr/bin/python3
PYTEST ?= $(PYTHON) -m pytest
DESTDIR ?=
unitdir ?= /lib/systemd/system
catalogdir ?= /usr/lib/systemd/catalog
sysusersdir ?= /usr/lib/sysusers.d

ALL_CFLAGS = $(WARN_CFLAGS) $(SAN_CFLAGS) -D_GNU_SOURCE -DXP_VERSION='"$(VERSION)"' \
             -Isrc $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(SAN_LDFLAGS) $(LDFLAGS)

PROGRAMS = src/xpimportd src/xpimportctl
PROGRAM_SRCS = $(PROGRAMS:=.c)
LIB_SRCS = $(filter-out $(PROGRAM_SRCS),$(sort $(wildcard src/*.c)))
LIB_OBJS = $(LIB_SRCS:.c=.o)
UNIT_SRCS = $(sort $(wildcard tests/unit/test_*.c))
UNIT_TESTS = $(UNIT_SRCS:.c=)
HEADERS = $(wildcard src/*.h)

.PHONY: all deps demo check check-unit check-integration check-man check-systemd check-fuzz check-reliability \
        bench fuzz install clean distclean
.DEFAULT_GOAL := all

all: $(PROGRAMS)

configure: configure.ac
	@sh build-aux/deps.sh --auto
	autoreconf -fi

config.mk: configure config.mk.in
	@sh build-aux/deps.sh --auto
	./configure $(CONFIGURE_FLAGS)

src/%.o: src/%.c $(HEADERS) config.mk
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

src/libxp.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

src/xpimportd: src/xpimportd.o src/libxp.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

src/xpimportctl: src/xpimportctl.o src/libxp.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

tests/unit/test_%: tests/unit/test_%.c src/libxp.a $(HEADERS)
	$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) $(ALL_LDFLAGS) -o $@ $< src/libxp.a $(PKG_LIBS) $(CMOCKA_LIBS)

deps:
	@sh build-aux/deps.sh

# Fuzz targets (libFuzzer, ASan + UBSan, clang): the library is rebuilt with clang
# under tests/fuzz/bin/. `make fuzz` runs each target for FUZZ_SECONDS; `make check`
# replays every kept corpus and crash input (tests/fuzz/corpus/NAME/).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
             -D_GNU_SOURCE -DLEDGER_FUZZ_CHECK -DXP_VERSION='"$(VERSION)"' -Isrc $(PKG_CFLAGS)
FUZZ_SRCS = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS = $(patsubst tests/fuzz/%.c,tests/fuzz/bin/%,$(FUZZ_SRCS))
FUZZ_OBJS = $(patsubst src/%.c,tests/fuzz/bin/obj/%.o,$(LIB_SRCS))
.SECONDARY: $(FUZZ_OBJS)

tests/fuzz/bin/obj/%.o: src/%.c $(HEADERS) config.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

tests/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) $(PKG_LIBS)

fuzz: $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do n=$${t##*/fuzz_}; mkdir -p tests/fuzz/corpus/$$n; \
	  echo "== $$t ($(FUZZ_SECONDS)s)"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/fuzz/corpus/$$n/crash- \
	    -max_len=65536 tests/fuzz/corpus/$$n; done

check-fuzz: $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do n=$${t##*/fuzz_}; \
	  c=$$(ls tests/fuzz/corpus/$$n | wc -l); echo "== replay $$t: $$c inputs"; \
	  $$t -runs=0 tests/fuzz/corpus/$$n >/dev/null 2>tests/fuzz/bin/replay-$$n.log || \
	    { tail -30 tests/fuzz/bin/replay-$$n.log; exit 1; }; done; echo "fuzz corpus replay: ok"

check-unit: $(UNIT_TESTS)
	@sh build-aux/deps.sh --auto
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; ./$$t; done

check-integration: $(PROGRAMS)
	$(PYTEST) -q -p no:cacheprovider tests/fakeapi tests/integration

check-man:
	@for m in man/*.[0-9]; do mandoc -Tlint -W warning $$m || exit 1; done; echo "man pages: mandoc -Tlint clean"

# The unit, with its programs pointing into the tree: `systemd-analyze verify` clean and a
# `systemd-analyze security` exposure of at most 1.5 (when systemd-analyze is installed).
check-systemd: all
	@if ! command -v systemd-analyze >/dev/null; then echo "systemd-analyze not installed: skipped"; exit 0; fi; \
	  u=$$(mktemp -d)/xpimportd.service; sed "s|@sbindir@|$(CURDIR)/src|g" systemd/xpimportd.service > $$u; \
	  systemd-analyze verify --man=no $$u || exit 1; \
	  e=$$(systemd-analyze security --offline=yes $$u 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'); \
	  echo "systemd-analyze security: exposure $$e (limit 1.5)"; rm -rf $$(dirname $$u); \
	  awk -v e="$$e" 'BEGIN { exit !(e != "" && e <= 1.5) }'

check: all check-unit check-man check-systemd check-fuzz check-integration

demo: all
	$(PYTHON) tests/demo.py

# The reliability and security suite (crash loops, fault injection, bad input, leaks):
# figures printed at the end and kept in tests/RELIABILITY.md.
check-reliability: all
	$(PYTEST) -q -p no:cacheprovider -s tests/reliability

# Benchmarks (not part of check): BENCH_ROWS=N for bigger runs; writes tests/bench/RESULTS.md.
BENCH_ROWS ?= 1000000
bench: all
	BENCH_ROWS=$(BENCH_ROWS) $(PYTHON) tests/bench/bench.py

install: all
	install -d $(DESTDIR)$(sbindir) $(DESTDIR)$(bindir) $(DESTDIR)$(mandir)/man1 \
	  $(DESTDIR)$(mandir)/man5 $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(unitdir) \
	  $(DESTDIR)$(catalogdir) $(DESTDIR)$(sysusersdir) \
	  $(DESTDIR)$(sysconfdir)/xpimportd/jobs.d
	install -m 0755 src/xpimportd $(DESTDIR)$(sbindir)/xpimportd
	install -m 0755 src/xpimportctl $(DESTDIR)$(bindir)/xpimportctl
	install -m 0644 man/xpimportctl.1 $(DESTDIR)$(mandir)/man1/
	install -m 0644 man/xpimportd.yaml.5 $(DESTDIR)$(mandir)/man5/
	install -m 0644 man/xpimportd.8 $(DESTDIR)$(mandir)/man8/
	sed 's|@sbindir@|$(sbindir)|g' systemd/xpimportd.service > $(DESTDIR)$(unitdir)/xpimportd.service
	chmod 0644 $(DESTDIR)$(unitdir)/xpimportd.service
	install -m 0644 systemd/xpimportd.catalog $(DESTDIR)$(catalogdir)/xpimportd.catalog
	install -m 0644 systemd/xpimportd.sysusers $(DESTDIR)$(sysusersdir)/xpimportd.conf
	test -e $(DESTDIR)$(sysconfdir)/xpimportd/xpimportd.yaml || \
	  install -m 0640 etc/xpimportd.yaml $(DESTDIR)$(sysconfdir)/xpimportd/xpimportd.yaml
	install -m 0640 etc/jobs.d/crm-daily.yaml.example $(DESTDIR)$(sysconfdir)/xpimportd/jobs.d/

clean:
	rm -f src/*.o src/libxp.a $(PROGRAMS) $(UNIT_TESTS)
	rm -rf tests/fuzz/bin

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache aclocal.m4

# `make -s print-ALL_CFLAGS` etc.: for building one file by hand.
print-%:
	@echo '$($*)'
