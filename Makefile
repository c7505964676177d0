# vmmig — see README.md.  `make` builds build/bin/vmmig; `make check` runs every test.
CC      ?= cc
CFLAGS  ?= -O2 -g
STD     := -std=c11
# snprintf into fixed status fields truncates on purpose.
WARN     = $(STD) -Wall -Wextra -Werror -Wno-format-truncation
# Recursive on purpose: on a fresh machine the first build installs
# libfuse3-dev (and pkg-config) before anything is compiled.
CPPFLAGS_ALL = -Ilib $(shell pkg-config --cflags fuse3 2>/dev/null || echo -I/usr/include/fuse3)
LIBS    := -lfuse3 -lxenlight -lxentoollog -lxenstore -lxenctrl -lcap -lpthread

LIB_SRC    := $(wildcard lib/*.c)
APPLET_SRC := vmmigfs/vmmigfs.c tools/vmmig.c tools/lock.c tools/migrate.c tools/send.c \
              tools/receive.c tools/comigrate.c tools/console.c tools/blockmirror.c tools/create.c \
              guestctl/guestctl.c
SRC        := $(LIB_SRC) $(APPLET_SRC)
LINKS      := vmmigfs guestctl

B := build
OBJ      := $(SRC:%.c=$(B)/obj/%.o)
ASAN_OBJ := $(SRC:%.c=$(B)/asan/%.o)
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/test/%.t)

# Packages the build and the tests need on a fresh Debian 12.
BUILD_DEPS := gcc make pkg-config libfuse3-dev fuse3 libxen-dev libcap-dev
TEST_DEPS  := perl util-linux python3 xen-utils-4.17 xenstore-utils qemu-system-x86 \
              busybox-static cpio gzip linux-kbuild-6.1 kmod groff-base man-db \
              clang-14 libclang-rt-14-dev qemu-utils nbdkit libnbd-bin iproute2 binutils
DEPS_STAMP := .cache/deps.stamp

.PHONY: all deps check check-unit check-fs check-comigrate check-man check-blockmirror check-install check-harness check-xen check-xen2 check-qemu check-fuzz fuzz demo \
        bench clean \
        install uninstall
all: $(B)/bin/vmmig

deps: $(DEPS_STAMP)
# Redone when this list changes (a dpkg query per package when nothing is missing).
$(DEPS_STAMP): Makefile
	@missing=$$(for p in $(BUILD_DEPS) $(TEST_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@mkdir -p $(@D) && touch $@

$(B)/obj/%.o: %.c $(wildcard lib/*.h) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS_ALL) -c -o $@ $<

$(B)/asan/%.o: %.c $(wildcard lib/*.h) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) -O1 -g $(SAN) $(WARN) $(CPPFLAGS_ALL) -c -o $@ $<

# Xen's public headers use anonymous unions, a GNU extension.
$(B)/obj/lib/backend_xen.o $(B)/asan/lib/backend_xen.o $(B)/obj/lib/xenmig.o \
    $(B)/obj/lib/hypflag.o $(B)/asan/lib/hypflag.o \
    $(B)/asan/lib/xenmig.o: STD := -std=gnu11

$(B)/bin/vmmig: $(OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(OBJ) $(LIBS)
	@for l in $(LINKS); do ln -sf vmmig $(B)/bin/$$l; done

$(B)/asan/vmmig: $(ASAN_OBJ)
	$(CC) $(SAN) -o $@ $(ASAN_OBJ) $(LIBS)

# Unit tests link the library objects built with the sanitizers.
$(B)/test/%.t: tests/unit/%.c tests/unit/tap.h $(filter $(B)/asan/lib/%,$(ASAN_OBJ))
	@mkdir -p $(@D)
	$(CC) -O1 -g $(SAN) $(WARN) $(CPPFLAGS_ALL) -Itests/unit -o $@ $< \
	    $(filter $(B)/asan/lib/%,$(ASAN_OBJ)) $(LIBS)

# It includes the client's source, to drive its loop against scripted agents.
$(B)/test/consoleclient.t: tools/console.c

# The userspace Xen stand-ins for the fast tests (always asked: make decides).
.PHONY: test-helpers
test-helpers: | $(DEPS_STAMP)
	$(MAKE) -C tests/xenshim OUT=$(abspath $(B))/test

KMOD := guestctl/kmod/migration_lock.ko
$(KMOD): guestctl/kmod/migration_lock.c
	$(MAKE) -C guestctl/kmod

check-unit: $(UNIT_BIN)
	prove -e '' $(UNIT_BIN)

# The echo/cat tests run twice: the release binary, and the ASan/UBSan build.
check-fs: $(B)/bin/vmmig $(B)/asan/vmmig test-helpers
	prove tests/fs-*.t
	VMMIG=$(abspath $(B))/asan/vmmig prove tests/fs-*.t

# On the emulated Xen host: the dynamic build, then the static one (in dom0 and in the guest).
check-xen: $(B)/bin/vmmig $(KMOD) static
	prove tests/xen/system.t
	VMMIG_BIN=$(B)/static/vmmig.stripped prove tests/xen/system.t

# Co-migration's coordinator with fake members (release and ASan builds).
check-comigrate: $(B)/bin/vmmig $(B)/asan/vmmig
	prove tests/comigrate.t
	VMMIG=$(abspath $(B))/asan/vmmig prove tests/comigrate.t

check-man: $(B)/bin/vmmig
	prove tests/man.t

# blockmirror against the real NBD tools (qemu-nbd, qemu-io, nbdkit, nbdinfo, nbdcopy).
check-blockmirror: $(B)/bin/vmmig
	prove tests/blockmirror-*.t

check-install: $(B)/bin/vmmig
	prove tests/install.t

# The emulated hosts' TAP reporting (tests/lib/bootloop.sh).
check-harness:
	prove tests/bootloop.t bench/lib-test.sh

# Control-protocol fuzzing (libFuzzer): a bounded run in check, longer with make fuzz.
FUZZ_TIME ?= 300
fuzz: | $(DEPS_STAMP)
	tests/fuzz/run.sh $(FUZZ_TIME)
check-fuzz: | $(DEPS_STAMP)
	tests/fuzz/run.sh 20

# static.t compares with the dynamic build and uses the userspace xenstored.
check-static: $(B)/bin/vmmig test-helpers

# Two emulated Xen hosts on one QEMU socket network (about 19 minutes).
check-xen2: $(B)/bin/vmmig $(KMOD)
	prove tests/xen2/system2.t

# QEMU domains between two hosts made of network namespaces, real guests
# under TCG (tests/qemu/fetch.sh fetches the kernel and puts the static
# build in the guest for guestctl; about 1 minute each).
check-qemu: $(B)/bin/vmmig static
	prove tests/qemu/*.t

# make check stays well under 20 minutes on 2 cores; the two-host system
# test (check-xen2, about 19 minutes of emulated Xen) is its own target,
# and .ci/run runs both.
CHECK_PARTS := check-unit check-fs check-comigrate check-man check-blockmirror check-install check-harness check-static check-fuzz check-xen check-qemu
# One part after another even under make -j: the emulated hosts and the
# timed stages share the two cores with whatever else runs.
check:
	@set -e; for part in $(CHECK_PARTS); do $(MAKE) --no-print-directory $$part; done

demo: $(B)/bin/vmmig $(KMOD)
	tests/xen/demo.sh

bench: $(B)/bin/vmmig test-helpers $(KMOD)
	bench/run.sh
	bench/hash/run.sh
	bench/migrate/run.sh
	bench/comigrate/run.sh
	bench/blockmirror/run.sh
	bench/migrate-qemu/run.sh
	bench/comigrate-qemu/run.sh

# Installation: the binary, its applet links, man pages, the systemd unit and
# a default policy (an existing policy is kept).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
MANPAGES   := $(wildcard man/*.[1-8])

install: $(B)/bin/vmmig
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/vmmig
	install -m 755 $(B)/bin/vmmig $(DESTDIR)$(BINDIR)/vmmig
	for l in $(LINKS); do ln -sf vmmig $(DESTDIR)$(BINDIR)/$$l; done
	for m in $(MANPAGES); do s=$${m##*.}; install -d $(DESTDIR)$(MANDIR)/man$$s; \
	    install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	printf '.so man1/vmmig-lock.1\n' > $(DESTDIR)$(MANDIR)/man1/vmmig-unlock.1
	sed 's|@BINDIR@|$(BINDIR)|g' vmmigfs/vmmigfs.service.in > $(DESTDIR)$(UNITDIR)/vmmigfs.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/vmmig/policy ] || \
	    install -m 644 vmmigfs/policy.default $(DESTDIR)$(SYSCONFDIR)/vmmig/policy

# The policy is configuration: uninstall leaves it.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vmmig $(addprefix $(DESTDIR)$(BINDIR)/,$(LINKS))
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m#man/}; done
	rm -f $(DESTDIR)$(MANDIR)/man1/vmmig-unlock.1 $(DESTDIR)$(UNITDIR)/vmmigfs.service

clean:
	rm -rf $(B)
	-$(MAKE) -C guestctl/kmod clean

# make static: the single static musl binary (issue 8); see tools/musl/.
include tools/musl/static.mk
