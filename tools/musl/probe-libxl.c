/* probe-libxl: the static musl libxenlight.a (tools/musl/build-deps.sh)
 * linked and exercised as far as a machine without Xen allows.
 *
 *   probe-libxl       1. libxl_domain_config_init, fill a small PVH config,
 *                        libxl_domain_config_to_json (yajl inside libxl),
 *                        libxl_uuid_generate/libxl_uuid_from_string (libuuid);
 *                     2. libxl_ctx_alloc.  Without a hypervisor it fails
 *                        (libxenctrl cannot open /dev/xen/privcmd): prints
 *                        "no-xen" and exits 3.  On a Xen dom0 it goes on:
 *                        libxl_domain_config_from_json of the JSON from 1,
 *                        libxl_get_free_memory, libxl_domain_info(0), and
 *                        exits 0.
 *   Exit 1: something that works without Xen did not.
 *
 * It also takes the address of every libxl call the migration engine makes,
 * so that linking it proves they all resolve from the static archives.
 *
 * Built by `make static-probe` (tools/musl/static.mk) as
 * build/static/probe-libxl, which runs it once (exit 0 or 3 accepted). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxl.h>
#include <libxl_utils.h>
#include <xentoollog.h>

static int fails;

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    fflush(stdout);
    if (!ok)
        fails++;
}

/* What lib/xenmig.c calls: referenced here so the link must resolve them. */
static void *const engine_calls[] = {
    (void *)libxl_ctx_alloc,
    (void *)libxl_ctx_free,
    (void *)libxl_domain_suspend,
    (void *)libxl_domain_create_restore,
    (void *)libxl_retrieve_domain_configuration,
    (void *)libxl_domain_config_to_json,
    (void *)libxl_domain_config_from_json,
    (void *)libxl_domain_rename,
    (void *)libxl_domain_unpause,
    (void *)libxl_domain_resume,
    (void *)libxl_domain_destroy,
    (void *)libxl_get_free_memory,
    (void *)libxl_domain_info,
    (void *)xtl_createlogger_stdiostream,
    (void *)xtl_logger_destroy,
};

int main(void)
{
    libxl_domain_config dc;
    char *json;
    size_t i, n = 0;

    for (i = 0; i < sizeof engine_calls / sizeof engine_calls[0]; i++)
        n += engine_calls[i] != NULL;
    check(n == sizeof engine_calls / sizeof engine_calls[0], "engine's libxl calls linked");

    libxl_domain_config_init(&dc);
    dc.c_info.type = LIBXL_DOMAIN_TYPE_PVH;
    libxl_domain_build_info_init_type(&dc.b_info, LIBXL_DOMAIN_TYPE_PVH);
    dc.c_info.name = strdup("probe-libxl");
    check(libxl_uuid_from_string(&dc.c_info.uuid, "0b5e4d1c-2a3f-4c6d-8e9f-0a1b2c3d4e5f") == 0,
          "libxl_uuid_from_string");
    dc.b_info.max_vcpus = 2;
    dc.b_info.max_memkb = dc.b_info.target_memkb = 512 * 1024;

    /* to_json needs no ctx on success (it logs through ctx only on error). */
    json = libxl_domain_config_to_json(NULL, &dc);
    check(json != NULL, "libxl_domain_config_to_json");
    check(json && strstr(json, "\"probe-libxl\"") && strstr(json, "0b5e4d1c-2a3f-4c6d-8e9f-0a1b2c3d4e5f")
              && strstr(json, "\"max_memkb\": 524288"),
          "JSON holds name, uuid and memory");
    if (json)
        printf("  %zu bytes of JSON\n", strlen(json));

    libxl_uuid u;
    libxl_uuid_generate(&u);
    check(!libxl_uuid_is_nil(&u), "libxl_uuid_generate");

    xentoollog_logger_stdiostream *lg = xtl_createlogger_stdiostream(stderr, XTL_ERROR, 0);
    check(lg != NULL, "xtl_createlogger_stdiostream");
    libxl_ctx *ctx = NULL;
    int rc = libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, (xentoollog_logger *)lg);
    int code;
    if (rc) {
        printf("no-xen libxl_ctx_alloc failed cleanly (rc %d)\n", rc);
        code = fails ? 1 : 3;
    } else {
        libxl_domain_config back;
        libxl_domain_config_init(&back);
        check(json && libxl_domain_config_from_json(ctx, &back, json) == 0,
              "libxl_domain_config_from_json");
        check(back.c_info.name && strcmp(back.c_info.name, "probe-libxl") == 0,
              "round trip keeps the name");
        libxl_domain_config_dispose(&back);
        uint64_t free_kb = 0;
        check(libxl_get_free_memory(ctx, &free_kb) == 0, "libxl_get_free_memory");
        printf("  free memory %llu KiB\n", (unsigned long long)free_kb);
        libxl_dominfo di;
        libxl_dominfo_init(&di);
        check(libxl_domain_info(ctx, &di, 0) == 0, "libxl_domain_info(0)");
        libxl_dominfo_dispose(&di);
        libxl_ctx_free(ctx);
        code = fails ? 1 : 0;
    }
    xtl_logger_destroy((xentoollog_logger *)lg);
    free(json);
    libxl_domain_config_dispose(&dc);
    return code;
}
