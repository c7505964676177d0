/* Policy parsing: every key, comments, and bad input that must leave the
 * policy untouched. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "policy.h"
#include "tap.h"

int main(void)
{
    struct policy p, orig;
    char err[300];

    policy_defaults(&p);
    is_int(p.guest_max_hold, 3600, "default guest_max_hold");
    is_int(p.max_ttl, 86400, "default max_ttl");
    is_str(p.admin_group, "", "default admin_group empty");

    const char *text = "# site policy\n\nguest_max_hold = 60   # one minute\nmax_ttl=120\n"
                       "admin_group = \"vmmig\"\n";
    is_int(policy_parse(&p, text, strlen(text), err, sizeof err), 0, "file parses");
    is_int(p.guest_max_hold, 60, "guest_max_hold set");
    is_int(p.max_ttl, 120, "max_ttl set");
    is_str(p.admin_group, "vmmig", "admin_group unquoted");

    is_int(policy_set(&p, "guest_max_hold=0\n", 17, err, sizeof err), 0, "0 means never");
    is_int(p.guest_max_hold, 0, "guest_max_hold 0");

    static const char *const bad[] = {
        "", "\n", "guest_max_hold", "guest_max_hold=", "guest_max_hold=-1",
        "guest_max_hold=1e3", "guest_max_hold=99999999999", "max_ttl=0", "nosuchkey=1",
        "admin_group=bad/group", "admin_group=a b", "=5", "max_ttl=5\x01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        orig = p;
        err[0] = 0;
        int rc = policy_set(&p, bad[i], strlen(bad[i]), err, sizeof err);
        ok(rc == -EINVAL && err[0], "refused '%s': %s", bad[i], err);
        ok(!memcmp(&orig, &p, sizeof p), "policy unchanged after '%s'", bad[i]);
    }
    char embedded[] = "max_ttl=5\0junk";
    orig = p;
    ok(policy_set(&p, embedded, sizeof embedded - 1, err, sizeof err) == -EINVAL,
       "embedded NUL refused: %s", err);
    char huge[400];
    memset(huge, 'a', sizeof huge);
    ok(policy_set(&p, huge, sizeof huge, err, sizeof err) == -EINVAL, "overlong refused: %s", err);
    ok(!memcmp(&orig, &p, sizeof p), "unchanged");

    const char *badfile = "max_ttl = 10\nbogus line\n";
    orig = p;
    ok(policy_parse(&p, badfile, strlen(badfile), err, sizeof err) == -EINVAL &&
           strstr(err, "line 2"),
       "bad file names the line: %s", err);
    ok(!memcmp(&orig, &p, sizeof p), "policy unchanged after a bad file");

    /* Save and load round trip. */
    char dir[] = "/tmp/vmmig-policy-XXXXXX", path[64];
    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/policy", dir);
    struct policy q, r;
    is_int(policy_load(path, &q, err, sizeof err), 0, "missing file: defaults");
    is_int(q.guest_max_hold, 3600, "defaults loaded");
    q.guest_max_hold = 7;
    strcpy(q.admin_group, "wheel");
    is_int(policy_save(path, &q), 0, "saved");
    is_int(policy_load(path, &r, err, sizeof err), 0, "loaded");
    ok(r.guest_max_hold == 7 && !strcmp(r.admin_group, "wheel"), "round trip");
    struct strbuf sb = {0};
    policy_format(&r, &sb);
    ok(strstr(sb.s, "guest_max_hold = 7\n") != NULL, "format: %s", sb.s);
    sb_free(&sb);
    unlink(path);
    char deep[128];
    snprintf(deep, sizeof deep, "%s/etc/vmmig/policy", dir);
    is_int(policy_save(deep, &q), 0, "save creates a missing directory");
    is_int(policy_load(deep, &r, err, sizeof err), 0, "and loads back");
    unlink(deep);
    snprintf(deep, sizeof deep, "%s/etc/vmmig", dir);
    rmdir(deep);
    snprintf(deep, sizeof deep, "%s/etc", dir);
    rmdir(deep);
    rmdir(dir);
    return done_testing();
}
