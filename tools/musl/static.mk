# tools/musl/static.mk - `make static`: vmmig as ONE static musl binary.
#
# Included from the top Makefile (after SRC, B, WARN, LINKS are defined):
#
#     include tools/musl/static.mk
#
# Targets:
#   static        build-deps.sh (cached), then build/static/vmmig (static,
#                 musl-gcc -Os, with symbols) and build/static/vmmig.stripped
#                 (the one to ship), links vmmigfs/guestctl -> vmmig.stripped
#                 beside them, and prints the stripped size against the
#                 budget (STATIC_MAX_BYTES, 1.5 MB).
#   static-deps   only the libraries: tools/musl/build-deps.sh
#   static-size   the size report again (fails when over budget)
#   static-probe  build/static/probe: libxenstore.a and libfuse3.a exercised
#                 without a hypervisor (tools/musl/probe.c; for tests/static.t)
#   check-static  prove tests/static.t
#   clean-static  remove build/static (the library cache .cache/musl stays;
#                 rm -rf .cache/musl for a cold rebuild)
#
# The same sources ($(SRC)) and warnings ($(WARN): -std=c11 -Wall -Wextra
# -Werror -Wno-format-truncation; backend_xen.c with -std=gnu11) as the
# dynamic build.  The libraries come from .cache/musl/prefix, built from
# Debian's source packages by tools/musl/build-deps.sh; nothing here reads
# /usr/include or /usr/lib.
#
# Why two files: strip in place would leave no symbols to read a crash with;
# build/static/vmmig keeps them, build/static/vmmig.stripped is what ships
# (and what tests/static.t runs).

MUSL_CC          ?= musl-gcc
STATIC_CFLAGS    ?= -Os
STATIC_MAX_BYTES ?= 1500000
MUSL_DIR         := .cache/musl
MUSL_PREFIX      := $(MUSL_DIR)/prefix
MUSL_STAMP       := $(MUSL_DIR)/stamps/all
MUSL_BUILD_DEPS  := tools/musl/build-deps.sh

SB          := $(B)/static
STATIC_OBJ  := $(SRC:%.c=$(SB)/obj/%.o)
STATIC_BIN  := $(SB)/vmmig
STATIC_SHIP := $(SB)/vmmig.stripped
# -isystem: third-party headers must not trip -Werror.
STATIC_CPPFLAGS := -Ilib -isystem $(MUSL_PREFIX)/include/fuse3 -isystem $(MUSL_PREFIX)/include
# libxenctrl's dependencies after it, each after its users.
STATIC_LIBS := -L$(MUSL_PREFIX)/lib -lfuse3 -lxenstore -lxenctrl \
               -lxenforeignmemory -lxendevicemodel -lxencall -lxengnttab -lxenevtchn \
               -lxentoollog -lxentoolcore -lcap -lpthread

.PHONY: static static-deps static-size static-probe check-static clean-static musl-force

static: static-size

# build-deps.sh runs on every `make static` (it exits in well under a second
# when its stamp is current) and rewrites the stamp only after a rebuild, so
# the objects and the binary are redone exactly when the libraries changed.
static-deps $(MUSL_STAMP): musl-force
	@$(MUSL_BUILD_DEPS)
musl-force: ;

$(SB)/obj/%.o: %.c $(wildcard lib/*.h) $(MUSL_STAMP) tools/musl/static.mk
	@mkdir -p $(@D)
	$(MUSL_CC) $(STATIC_CFLAGS) $(WARN) $(STATIC_CPPFLAGS) -c -o $@ $<

# Xen's public headers use anonymous unions, a GNU extension.
$(SB)/obj/lib/backend_xen.o: STD := -std=gnu11

$(STATIC_BIN): $(STATIC_OBJ) $(MUSL_STAMP)
	$(MUSL_CC) -static $(STATIC_CFLAGS) -o $@ $(STATIC_OBJ) $(STATIC_LIBS)

$(STATIC_SHIP): $(STATIC_BIN)
	strip -o $@ $<
	@for l in $(LINKS); do ln -sf vmmig.stripped $(SB)/$$l; done

static-size: $(STATIC_SHIP)
	@full=$$(stat -c %s $(STATIC_BIN)); size=$$(stat -c %s $(STATIC_SHIP)); \
	printf 'static: %s %d bytes (%d KiB); %s %d bytes (%d KiB) stripped\n' \
	    $(STATIC_BIN) $$full $$((full / 1024)) $(STATIC_SHIP) $$size $$((size / 1024)); \
	if [ $$size -lt $(STATIC_MAX_BYTES) ]; then \
	    echo "static: OK: stripped size $$size < $(STATIC_MAX_BYTES) bytes (1.5 MB budget)"; \
	else \
	    echo "static: OVER BUDGET: stripped size $$size >= $(STATIC_MAX_BYTES) bytes (1.5 MB budget)"; \
	    exit 1; \
	fi

static-probe: $(SB)/probe
$(SB)/probe: tools/musl/probe.c $(MUSL_STAMP) tools/musl/static.mk
	@mkdir -p $(@D)
	$(MUSL_CC) -static $(STATIC_CFLAGS) $(WARN) $(STATIC_CPPFLAGS) -o $@ $< $(STATIC_LIBS)
	strip $@

check-static: static static-probe
	prove tests/static.t

clean-static:
	rm -rf $(SB)
