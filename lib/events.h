/* The event log behind the `events` file: a bounded ring of lines, each also
 * sent to syslog.  `gen` counts every event so pollers know something changed. */
#ifndef VMMIG_EVENTS_H
#define VMMIG_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define EVENTS_KEEP 512

struct events {
    char *line[EVENTS_KEEP];
    size_t head, count;
    uint64_t gen;
    int use_syslog;
};

/* Fields are "key=value" pairs, formatted by the caller. */
void events_emit(struct events *ev, const char *domain, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void events_format(const struct events *ev, struct strbuf *sb);
void events_free(struct events *ev);

#endif
