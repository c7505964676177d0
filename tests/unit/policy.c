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
    is_str(p.transport, "tcp", "default transport tcp");
    is_int(p.port, 8123, "default port 8123");
    is_int(p.migrate_timeout, 30, "default migrate_timeout 30");
    is_int(p.forward_ttl, 3600, "default forward_ttl 3600");
    ok(p.accept_incoming, "default accept_incoming yes");

    const char *text = "# site policy\n\nguest_max_hold = 60   # one minute\nmax_ttl=120\n"
                       "admin_group = \"vmmig\"\n";
    is_int(policy_parse(&p, text, strlen(text), err, sizeof err), 0, "file parses");
    is_int(p.guest_max_hold, 60, "guest_max_hold set");
    is_int(p.max_ttl, 120, "max_ttl set");
    is_str(p.admin_group, "vmmig", "admin_group unquoted");

    is_int(policy_set(&p, "guest_max_hold=0\n", 17, err, sizeof err), 0, "0 means never");
    is_int(p.guest_max_hold, 0, "guest_max_hold 0");

    /* The migration keys. */
    static const struct {
        const char *line;
        const char *transport;
        long port, timeout, fwd;
        int accept;
    } good[] = {
        {"transport = ssh %h vmmig receive", "ssh %h vmmig receive", -1, -1, -1, -1},
        {"transport=\"ssh -p 2222 %h vmmig receive\"", "ssh -p 2222 %h vmmig receive", -1, -1, -1, -1},
        {"transport = ssh -o ProxyJump=gw %h vmmig receive", "ssh -o ProxyJump=gw %h vmmig receive",
         -1, -1, -1, -1},
        {"transport = %h", "%h", -1, -1, -1, -1},
        {"transport = tcp", "tcp", -1, -1, -1, -1},
        {"port = 1", NULL, 1, -1, -1, -1},
        {"port=65535", NULL, 65535, -1, -1, -1},
        {"migrate_timeout = 1", NULL, -1, 1, -1, -1},
        {"migrate_timeout = 86400", NULL, -1, 86400, -1, -1},
        {"forward_ttl = 0", NULL, -1, -1, 0, -1},
        {"forward_ttl = 31536000", NULL, -1, -1, 31536000, -1},
        {"accept_incoming = no", NULL, -1, -1, -1, 0},
        {"accept_incoming=yes", NULL, -1, -1, -1, 1},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *l = good[i].line;
        is_int(policy_set(&p, l, strlen(l), err, sizeof err), 0, "'%s' accepted: %s", l, err);
        if (good[i].transport)
            is_str(p.transport, good[i].transport, "  ...transport");
        if (good[i].port >= 0)
            is_int(p.port, good[i].port, "  ...port");
        if (good[i].timeout >= 0)
            is_int(p.migrate_timeout, good[i].timeout, "  ...migrate_timeout");
        if (good[i].fwd >= 0)
            is_int(p.forward_ttl, good[i].fwd, "  ...forward_ttl");
        if (good[i].accept >= 0)
            is_int(p.accept_incoming, good[i].accept, "  ...accept_incoming");
    }

    static const char *const bad[] = {
        "", "\n", "guest_max_hold", "guest_max_hold=", "guest_max_hold=-1",
        "guest_max_hold=1e3", "guest_max_hold=99999999999", "max_ttl=0", "nosuchkey=1",
        "admin_group=bad/group", "admin_group=a b", "=5", "max_ttl=5\x01",
        "transport=", "transport=udp", "transport=ssh hostB vmmig receive", "transport=ssh %s receive",
        "transport=ssh %h %d", "transport=ssh %", "transport=ssh %h # x", "transport=ssh \"%h\" r",
        "transport=TCP",
        "transport=ssh %h xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "port=0", "port=65536", "port=-1", "port=http", "port=", "port=80 81", "port=0x50",
        "migrate_timeout=0", "migrate_timeout=86401", "migrate_timeout=-5", "migrate_timeout=1.5",
        "migrate_timeout=", "forward_ttl=-1", "forward_ttl=31536001", "forward_ttl=1h",
        "forward_ttl=", "accept_incoming=maybe", "accept_incoming=1", "accept_incoming=true",
        "accept_incoming=YES", "accept_incoming=", "stream=", "stream=fast", "stream=DIRECT",
        "stream=direct relay",
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
    sb_reset(&sb);
    policy_defaults(&q);
    policy_format(&q, &sb);
    is_str(sb.s,
           "guest_max_hold = 3600\nmax_ttl = 86400\nadmin_group = \ntransport = tcp\nport = 8123\n"
           "migrate_timeout = 30\nforward_ttl = 3600\naccept_incoming = yes\nstream = relay\n",
           "format: every key, defaults");
    const char *mig = "transport = ssh %h vmmig receive\nport = 9000\nmigrate_timeout = 12\n"
                      "forward_ttl = 0\naccept_incoming = no\nstream = direct\n";
    is_int(policy_parse(&q, mig, strlen(mig), err, sizeof err), 0, "migration keys parse: %s", err);
    is_int(policy_save(path, &q), 0, "saved");
    is_int(policy_load(path, &r, err, sizeof err), 0, "loaded");
    ok(!strcmp(r.transport, "ssh %h vmmig receive") && r.port == 9000 && r.migrate_timeout == 12 &&
           r.forward_ttl == 0 && !r.accept_incoming && r.stream_direct,
       "migration keys survive a round trip");
    ok(q.stream_direct && policy_set(&q, "stream = relay", 14, err, sizeof err) == 0 &&
           !q.stream_direct,
       "stream = relay sets it back");
    policy_set(&q, "stream=fast", 11, err, sizeof err);
    is_str(err, "stream: 'fast' is neither relay nor direct", "a bad stream says why");
    const char *badport = "port = 8123\nport = 99999\n";
    ok(policy_parse(&q, badport, strlen(badport), err, sizeof err) == -EINVAL &&
           strstr(err, "line 2") && strstr(err, "port"),
       "a bad port names the line: %s", err);
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

    /* The installed default policy is exactly the defaults. */
    char def[512];
    snprintf(def, sizeof def, "%.*s/../../vmmigfs/policy.default",
             (int)(strrchr(__FILE__, '/') ? strrchr(__FILE__, '/') - __FILE__ : 1),
             strrchr(__FILE__, '/') ? __FILE__ : ".");
    policy_defaults(&q);
    err[0] = 0;
    ok(access(def, R_OK) == 0, "%s is there", def);
    is_int(policy_load(def, &r, err, sizeof err), 0, "vmmigfs/policy.default loads %s", err);
    ok(!memcmp(&q, &r, sizeof q), "vmmigfs/policy.default holds the defaults");
    return done_testing();
}
