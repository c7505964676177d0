/* vmmig console's agent: when input waits (from the migrate file's line)
 * and where the domain went (lib/consolerelay.c). */
#include <stdbool.h>
#include <string.h>

#include "consolerelay.h"
#include "tap.h"

int main(void)
{
    char host[64];

    ok(!console_migrate_holds_input("none", true), "no migration: input flows");
    ok(!console_migrate_holds_input("running hostB stage=1 reservation sent=0", true),
       "reservation: input flows");
    ok(!console_migrate_holds_input("running hostB stage=2 iterative-pre-copy round=3 sent=9", true),
       "pre-copy: input flows (the guest takes keys in, marking the ring dirty)");
    ok(console_migrate_holds_input("running hostB stage=3 stop-and-copy sent=9", true),
       "stop-and-copy: input waits");
    ok(console_migrate_holds_input("running hostB stage=4 commitment sent=9", true),
       "commitment: input waits");
    ok(console_migrate_holds_input("running hostB stage=5 activation sent=9", true),
       "activation: input waits");
    ok(console_migrate_holds_input("recovering hostB: stage 3: the agent was killed", true),
       "recovering: input waits");
    ok(!console_migrate_holds_input("running hostB", true), "running without a stage yet: input flows");
    ok(!console_migrate_holds_input("failed hostB: stage=3 x", true), "failed: input flows");
    ok(!console_migrate_holds_input("done hostB", true), "done: input flows (the pty is gone anyway)");
    ok(!console_migrate_holds_input("", true), "empty: input flows");
    /* An engine that stops the guest by itself (QEMU): no announcement. */
    ok(console_migrate_holds_input("running hostB stage=2 iterative-pre-copy round=3 sent=9", false),
       "no stop hook: input waits during pre-copy too");
    ok(console_migrate_holds_input("running hostB", false), "no stop hook: running holds");
    ok(!console_migrate_holds_input("done hostB", false), "no stop hook: done flows");
    ok(!console_migrate_holds_input("none", false), "no stop hook: no migration flows");

    ok(console_moved_to("done hostB", host, sizeof host) && !strcmp(host, "hostB"),
       "done hostB: moved to hostB");
    ok(console_moved_to("migrated hostC at 2026-11-22 10:00:00", host, sizeof host) &&
           !strcmp(host, "hostC"),
       "migrated hostC at ...: moved to hostC");
    ok(!console_moved_to("running hostB stage=3", host, sizeof host), "running: not moved");
    return done_testing();
}
