#define _GNU_SOURCE
#include "events.h"

#include <stdarg.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>

void events_emit(struct events *ev, const char *domain, const char *event, const char *fmt, ...)
{
    struct strbuf sb = {0};
    char when[32];
    va_list ap;

    fmt_time(time(NULL), when, sizeof when);
    sb_printf(&sb, "%s %s %s", when, domain && *domain ? domain : "-", event);
    if (fmt && *fmt) {
        sb_add(&sb, " ", 1);
        va_start(ap, fmt);
        sb_vprintf(&sb, fmt, ap);
        va_end(ap);
    }
    if (ev->use_syslog)
        syslog(LOG_NOTICE, "%s", sb.s + 21); /* syslog adds its own time */

    size_t slot = (ev->head + ev->count) % EVENTS_KEEP;
    if (ev->count == EVENTS_KEEP) {
        free(ev->line[ev->head]);
        slot = ev->head;
        ev->head = (ev->head + 1) % EVENTS_KEEP;
    } else {
        ev->count++;
    }
    ev->line[slot] = sb.s;
    ev->gen++;
}

void events_format(const struct events *ev, struct strbuf *sb)
{
    for (size_t i = 0; i < ev->count; i++) {
        const char *l = ev->line[(ev->head + i) % EVENTS_KEEP];
        sb_printf(sb, "%s\n", l);
    }
}

void events_free(struct events *ev)
{
    for (size_t i = 0; i < ev->count; i++)
        free(ev->line[(ev->head + i) % EVENTS_KEEP]);
    ev->count = ev->head = 0;
}
