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
#                 without a hypervisor (tools/musl/probe.c; for tests/static.t);
#                 and build/static/probe-libxl (tools/musl/probe-libxl.c):
#                 libxenlight.a linked with every call the migration engine
#                 makes, run once: JSON and uuid work, libxl_ctx_alloc fails
#                 cleanly without Xen (exit 3) or works on a dom0 (exit 0)
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
# Sections per function and --gc-sections: the linker drops what nothing
# calls from inside the objects it takes (build-deps.sh compiles the libraries
# the same way); with libxl linked in, about 300 KB of the stripped binary.
# No unwind tables for vmmig's own C: nothing unwinds through it (no C++,
# no pthread_cancel), and .eh_frame is kept by strip (about 60 KB of ours).
STATIC_CFLAGS    ?= -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables \
                    -fno-unwind-tables
STATIC_LDFLAGS   ?= -Wl,--gc-sections
STATIC_MAX_BYTES ?= 1500000
MUSL_DIR         := .cache/musl
MUSL_PREFIX      := $(MUSL_DIR)/prefix
MUSL_STAMP       := $(MUSL_DIR)/stamps/all
MUSL_BUILD_DEPS  := tools/musl/build-deps.sh

SB          := $(B)/static
# tools/musl/fuse-noiconv.c: keeps libfuse3's iconv module (and musl's
# iconv tables, ~145 KB) out of the static link; see the file.
STATIC_OBJ  := $(SRC:%.c=$(SB)/obj/%.o) $(SB)/obj/tools/musl/fuse-noiconv.o
STATIC_BIN  := $(SB)/vmmig
STATIC_SHIP := $(SB)/vmmig.stripped
# -isystem: third-party headers must not trip -Werror.
STATIC_CPPFLAGS := -Ilib -isystem $(MUSL_PREFIX)/include/fuse3 -isystem $(MUSL_PREFIX)/include
# Each library before the ones it uses: libxenlight (libxl, for the
# migration engine lib/xenmig.c) uses libxenguest, libxenhypfs, libxenstore,
# libxenctrl and its dependencies, libyajl, libuuid and libz (libxenguest and
# libxenhypfs inflate with it).  Archives only add the objects something
# calls, so without the engine the libxl ones cost nothing.
STATIC_LIBS := -L$(MUSL_PREFIX)/lib -lfuse3 -lxenlight -lxenguest -lxenhypfs -lxenstore \
               -lxenctrl -lxenforeignmemory -lxendevicemodel -lxencall -lxengnttab \
               -lxenevtchn -lxentoollog -lxentoolcore -lyajl -luuid -lz -lcap -lpthread

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
$(SB)/obj/lib/backend_xen.o $(SB)/obj/lib/xenmig.o $(SB)/obj/lib/hypflag.o: STD := -std=gnu11

# lib/xenstophook.c holds libxl's suspend request at the co-migration stop
# barrier: in a static link by wrapping xs_write (the dynamic binary
# defines xs_write itself).
$(SB)/obj/lib/xenstophook.o: STATIC_CPPFLAGS += -DVMMIG_WRAP_XS_WRITE
$(STATIC_BIN): $(STATIC_OBJ) $(MUSL_STAMP)
	$(MUSL_CC) -static $(STATIC_CFLAGS) $(STATIC_LDFLAGS) -Wl,--wrap=xs_write -o $@ $(STATIC_OBJ) $(STATIC_LIBS)

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

static-probe: $(SB)/probe $(SB)/probe-libxl.ok
$(SB)/probe: tools/musl/probe.c $(MUSL_STAMP) tools/musl/static.mk
	@mkdir -p $(@D)
	$(MUSL_CC) -static $(STATIC_CFLAGS) $(STATIC_LDFLAGS) $(WARN) $(STATIC_CPPFLAGS) -o $@ $< $(STATIC_LIBS)
	strip $@

$(SB)/probe-libxl: tools/musl/probe-libxl.c $(MUSL_STAMP) tools/musl/static.mk
	@mkdir -p $(@D)
	$(MUSL_CC) -static $(STATIC_CFLAGS) $(STATIC_LDFLAGS) $(WARN) $(STATIC_CPPFLAGS) -o $@ $< $(STATIC_LIBS)
	strip $@

# Run once per build: 0 on a Xen dom0, 3 (libxl_ctx_alloc failed cleanly)
# without a hypervisor; anything else (1, a signal) fails.
$(SB)/probe-libxl.ok: $(SB)/probe-libxl
	@rc=0; $< >$@.log 2>&1 || rc=$$?; sed 's/^/probe-libxl: /' $@.log; \
	case $$rc in 0|3) touch $@ ;; \
	*) echo "probe-libxl: FAILED (exit $$rc)"; exit 1 ;; esac

check-static: static static-probe
	prove tests/static.t

clean-static:
	rm -rf $(SB)
