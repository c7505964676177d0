/* Small helpers shared by every applet: toybox-style error reporting,
 * a growable string buffer, atomic file writes and time formatting. */
#ifndef VMMIG_UTIL_H
#define VMMIG_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Name printed in front of every message ("vmmig lock: ..."). */
extern const char *toolname;

void error_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void perror_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void error_exit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void perror_exit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Exit codes: 0 ok, 1 failure, 2 usage. */
#define EXIT_USAGE 2

struct strbuf {
    char *s;
    size_t len, cap;
};
void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vprintf(struct strbuf *sb, const char *fmt, va_list ap);
void sb_add(struct strbuf *sb, const char *s, size_t len);
void sb_reset(struct strbuf *sb);
void sb_free(struct strbuf *sb);

void *xmalloc(size_t n);
void *xzalloc(size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Copy with truncation; always NUL-terminates. */
void strlcpy0(char *dst, const char *src, size_t size);

/* Write a whole file through a temporary and rename(), so readers see the
 * old or the new content, never a torn one.  Returns 0 or -errno. */
int atomic_write(const char *path, const void *data, size_t len, mode_t mode);
/* The same, creating the file's directory first if it does not exist yet. */
int atomic_write_mkdir(const char *path, const void *data, size_t len, mode_t mode);
/* Read a whole (small) file; *out is NUL-terminated.  Returns 0 or -errno. */
int read_file(const char *path, char **out, size_t *len);
int mkdir_p(const char *path, mode_t mode);

/* "2026-11-22T10:00:00Z", or "never" for 0. */
void fmt_time(time_t t, char *buf, size_t size);
/* Wall-clock milliseconds since the epoch (stop and resume times that two
 * processes compare). */
long long epoch_ms(void);

/* Parse a whole decimal integer within [min, max].  Returns 0 or -EINVAL/-ERANGE. */
int parse_long(const char *s, long min, long max, long *out);

/* Strip one trailing newline (what `echo` adds); returns the new length. */
size_t chomp(const char *buf, size_t len);

/* Does the text contain only printable characters (spaces and tabs allowed)? */
bool printable(const char *s, size_t len);

#endif
