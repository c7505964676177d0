# vmmig — see README.md.  `make` builds build/bin/vmmig; `make check` runs every test.
CC      ?= cc
CFLAGS  ?= -O2 -g
STD     := -std=c11
# snprintf into fixed status fields truncates on purpose.
WARN     = $(STD) -Wall -Wextra -Werror -Wno-format-truncation
CPPFLAGS_ALL := -Ilib $(shell pkg-config --cflags fuse3 2>/dev/null)
LIBS    := -lfuse3 -lxenstore -lxenctrl -lcap -lpthread

LIB_SRC    := $(wildcard lib/*.c)
APPLET_SRC := vmmigfs/vmmigfs.c tools/vmmig.c tools/lock.c tools/migrate.c guestctl/guestctl.c
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
              busybox-static cpio gzip linux-kbuild-6.1 kmod
DEPS_STAMP := .cache/deps.stamp

.PHONY: all deps check check-unit check-fs check-xen demo bench clean install
all: $(B)/bin/vmmig

deps: $(DEPS_STAMP)
$(DEPS_STAMP):
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
$(B)/obj/lib/backend_xen.o $(B)/asan/lib/backend_xen.o: STD := -std=gnu11

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

check-xen: $(B)/bin/vmmig $(KMOD)
	prove tests/xen/system.t

check: check-unit check-fs check-xen

demo: $(B)/bin/vmmig $(KMOD)
	tests/xen/demo.sh

bench: $(B)/bin/vmmig test-helpers
	bench/run.sh

clean:
	rm -rf $(B)
	-$(MAKE) -C guestctl/kmod clean
