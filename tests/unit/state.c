/* The per-UUID state record: round trip, and refusal of damaged records. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "state.h"
#include "tap.h"

int main(void)
{
    struct domstate st = {0}, back;
    char err[300], dir[] = "/tmp/vmmig-state-XXXXXX";
    const char *uuid = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";

    ok(uuid_valid(uuid), "valid uuid");
    ok(!uuid_valid("0A1B2C3D-4e5f-6071-8293-a4b5c6d7e8f9"), "upper case refused");
    ok(!uuid_valid("../../etc/passwd"), "path refused as uuid");
    ok(!uuid_valid(""), "empty uuid refused");

    ok(mkdtemp(dir) != NULL, "temp dir");
    is_int(state_load(dir, uuid, &back, err, sizeof err), 0, "missing record: empty state");
    ok(!back.admin.active && !back.guest_since, "empty state has no holds");

    st.admin = (struct hold){.active = true, .since = 100, .expires = 700, .uid = 0};
    strcpy(st.admin.by, "root");
    strcpy(st.admin.reason, "backup window");
    st.guest_since = 50;
    is_int(state_save(dir, uuid, &st), 0, "saved");
    is_int(state_load(dir, uuid, &back, err, sizeof err), 0, "loaded");
    ok(back.admin.active && back.admin.since == 100 && back.admin.expires == 700 &&
           !strcmp(back.admin.by, "root") && !strcmp(back.admin.reason, "backup window") &&
           back.guest_since == 50,
       "round trip keeps every field");
    is_int(state_save(dir, "not-a-uuid", &st), -EINVAL, "save refuses a bad uuid");

    static const char *const bad[] = {
        "admin=2\n", "admin.since=-1\n", "admin.since=abc\n", "version=9\n", "unknown=1\n",
        "no equals sign\n", "admin.uid=99999999999\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ok(state_parse(bad[i], strlen(bad[i]), &back, err, sizeof err) == -EINVAL && err[0],
           "damaged record refused: %s", err);
    }
    char nul[] = "admin=1\0";
    ok(state_parse(nul, sizeof nul - 1, &back, err, sizeof err) == -EINVAL, "NUL refused");

    char path[128];
    snprintf(path, sizeof path, "%s/domains/%s", dir, uuid);
    FILE *f = fopen(path, "w");
    fputs("garbage\n", f);
    fclose(f);
    ok(state_load(dir, uuid, &back, err, sizeof err) == -EINVAL && strstr(err, path),
       "load of a damaged file names it: %s", err);
    unlink(path);
    snprintf(path, sizeof path, "%s/domains", dir);
    rmdir(path);
    rmdir(dir);
    return done_testing();
}
