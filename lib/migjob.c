#define _GNU_SOURCE
#include "migjob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

const char *mig_stage_name(enum mig_stage s)
{
    static const char *const names[] = {"pre-migration",  "reservation", "iterative-pre-copy",
                                        "stop-and-copy", "commitment",  "activation"};
    return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

/* The element of list at *pos into buf (cut at size), advancing *pos; false at the end. */
static bool algo_next(const char **pos, char *buf, size_t size)
{
    const char *p = *pos;
    if (!p)
        return false;
    size_t n = strcspn(p, ",");
    snprintf(buf, size, "%.*s", (int)n, p);
    *pos = p[n] ? p + n + 1 : NULL;
    return true;
}

bool mig_algo_listed(const char *list, const char *name)
{
    char one[64];

    for (const char *p = list; algo_next(&p, one, sizeof one);)
        if (!strcmp(one, name))
            return true;
    return false;
}

bool mig_algo_known(const char *name)
{
    return *name && mig_algo_listed(MIG_ALGORITHMS, name);
}

bool mig_stream_known(const char *name)
{
    return !strcmp(name, "relay") || !strcmp(name, "direct");
}

int mig_algo_list_check(const char *list, const char *allowed, char *err, size_t errlen)
{
    char one[64], seen[256] = "";
    size_t n = 0;

    if (!*list) {
        snprintf(err, errlen, "empty list of algorithms (%s)", allowed ? allowed : MIG_ALGORITHMS);
        return -EINVAL;
    }
    for (const char *p = list; algo_next(&p, one, sizeof one);) {
        if (!mig_algo_known(one)) {
            snprintf(err, errlen, "unknown algorithm '%.20s' (known: " MIG_ALGORITHMS ")", one);
            return -EINVAL;
        }
        if (allowed && !mig_algo_listed(allowed, one)) {
            snprintf(err, errlen, "%s: not one this engine can do (%s)", one, allowed);
            return -EINVAL;
        }
        if (mig_algo_listed(seen, one)) {
            snprintf(err, errlen, "%s listed twice", one);
            return -EINVAL;
        }
        n += (size_t)snprintf(seen + n, sizeof seen - n, "%s%s", n ? "," : "", one);
    }
    return 0;
}

int mig_algo_choose(const char *theirs, const char *want, const char *mine, char *out,
                    size_t outlen, char *err, size_t errlen)
{
    char one[64];

    out[0] = 0;
    if (want && *want) {
        if (!mig_algo_known(want)) {
            snprintf(err, errlen, "unknown algorithm '%.20s' asked for", want);
            return -ENOTSUP;
        }
        if (!mig_algo_listed(mine, want)) {
            snprintf(err, errlen, "%s is not supported here (this host does %s)", want, mine);
            return -ENOTSUP;
        }
        if (!mig_algo_listed(theirs, want)) {
            snprintf(err, errlen, "%s asked for, but the source does not list it (%s)", want,
                     theirs);
            return -ENOTSUP;
        }
        snprintf(out, outlen, "%s", want);
        return 0;
    }
    for (const char *p = mine; algo_next(&p, one, sizeof one);)
        if (mig_algo_known(one) && mig_algo_listed(theirs, one)) {
            snprintf(out, outlen, "%s", one);
            return 0;
        }
    snprintf(err, errlen, "no algorithm in common (the source does %s, this host %s)",
             *theirs ? theirs : "none", mine);
    return -ENOTSUP;
}

static int connect_tcp(const char *host, unsigned port, int timeout_ms, int *fdp, char *err,
                       size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL, *ai;
    char portstr[16], name[256];
    int r, fd = -1, last = 0;

    /* "[v6addr]" as in URLs */
    strlcpy0(name, host, sizeof name);
    if (name[0] == '[' && name[strlen(name) - 1] == ']') {
        memmove(name, name + 1, strlen(name));
        name[strlen(name) - 1] = 0;
    }
    snprintf(portstr, sizeof portstr, "%u", port);
    r = getaddrinfo(name, portstr, &hints, &res);
    if (r) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(r));
        return -EHOSTUNREACH;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            socklen_t sl = sizeof last;
            r = poll(&p, 1, timeout_ms);
            if (r == 0) {
                last = ETIMEDOUT;
            } else if (r > 0 && !getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &sl) && !last) {
                r = 0;
                break;
            } else if (r < 0) {
                last = errno;
            }
            r = -1;
        } else if (r == 0) {
            break;
        } else {
            last = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s port %u: %s", host, port, strerror(last));
        return -(last ? last : ECONNREFUSED);
    }
    /* The protocol layer polls with its own timeouts; it wants blocking fds. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
    *fdp = fd;
    return 0;
}

static int connect_exec(const char *host, const char *via, int *fdp, pid_t *pidp, char *err,
                        size_t errlen)
{
    struct strbuf cmd = {0};
    int sv[2];
    pid_t pid;

    for (const char *p = via; *p; p++) {
        if (p[0] == '%' && p[1] == 'h') {
            sb_add(&cmd, host, strlen(host));
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            sb_add(&cmd, "%", 1);
            p++;
        } else {
            sb_add(&cmd, p, 1);
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        sb_free(&cmd);
        return -errno;
    }
    pid = fork();
    if (pid < 0) {
        int e = errno;
        snprintf(err, errlen, "fork: %s", strerror(e));
        close(sv[0]), close(sv[1]);
        sb_free(&cmd);
        return -e;
    }
    if (pid == 0) {
        dup2(sv[1], 0);
        dup2(sv[1], 1);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", cmd.s, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    sb_free(&cmd);
    *fdp = sv[0];
    *pidp = pid;
    return 0;
}

long mig_test_delay(const char *spec, const char *point, const char *domain)
{
    size_t n = strlen(point);
    long secs;

    if (!spec || !*point || strncmp(spec, point, n))
        return -1;
    spec += n;
    if (*spec == '@') {
        const char *colon = strrchr(spec, ':');
        size_t dlen = colon ? (size_t)(colon - spec - 1) : 0;
        if (!colon || !dlen || !domain || strlen(domain) != dlen || strncmp(spec + 1, domain, dlen))
            return -1;
        spec = colon;
    }
    if (*spec != ':' || parse_long(spec + 1, 0, 3600, &secs))
        return -1;
    return secs;
}

int mig_connect(const char *host, unsigned port, const char *via, int timeout_ms, int *fd,
                pid_t *pid, char *err, size_t errlen)
{
    *pid = 0;
    if (!via || !*via || !strcmp(via, "tcp"))
        return connect_tcp(host, port, timeout_ms, fd, err, errlen);
    return connect_exec(host, via, fd, pid, err, errlen);
}

int mig_dial(const char *host, unsigned port, const char *via, int timeout_ms,
             const uint8_t *psk, size_t psklen, const char *myhost, struct proto_conn *c,
             int *fd, pid_t *pid, char *err, size_t errlen)
{
    char why[300];
    int rc;

    if ((rc = mig_connect(host, port, via, timeout_ms, fd, pid, err, errlen))) {
        *fd = -1;
        *pid = 0;
        return rc;
    }
    proto_init(c, *fd, *fd, timeout_ms);
    if ((rc = proto_handshake_client(c, psk, psklen, myhost, why, sizeof why))) {
        snprintf(err, errlen, "%s: %s", host, why);
        mig_hangup(c, fd, pid);
    }
    return rc;
}

void mig_hangup(struct proto_conn *c, int *fd, pid_t *pid)
{
    if (*fd < 0)
        return;
    proto_wipe(c);
    close(*fd);
    *fd = -1;
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}

int mig_query(const char *host, unsigned port, const char *via, int timeout_ms,
              const uint8_t *psk, size_t psklen, const char *myhost, const char *uuid,
              const char *name, char *state, size_t statelen, char *err, size_t errlen)
{
    struct proto_conn c;
    struct strbuf sb = {0};
    uint8_t *pl = NULL;
    uint32_t len;
    int fd, type, rc;
    pid_t pid;

    if ((rc = mig_dial(host, port, via, timeout_ms, psk, psklen, myhost, &c, &fd, &pid, err,
                       errlen)))
        return rc;
    kv_add(&sb, "uuid", "%s", uuid);
    kv_add(&sb, "name", "%s", name);
    if ((rc = proto_send(&c, MSG_QUERY, sb.s, (uint32_t)sb.len))) {
        snprintf(err, errlen, "sending QUERY to %s: %s", host, strerror(-rc));
        goto out;
    }
    if ((rc = proto_recv(&c, &type, &pl, &len, err, errlen)))
        goto out;
    if (type != MSG_STATE || kv_get(pl, len, "state", state, statelen)) {
        snprintf(err, errlen, "%s answered QUERY with %s, not a STATE with a state", host,
                 msg_type_name(type));
        rc = -EPROTO;
    }
out:
    sb_free(&sb);
    free(pl);
    mig_hangup(&c, &fd, &pid);
    return rc;
}

size_t mig_strip_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), sl = strlen(suffix);
    return n > sl && !strcmp(name + n - sl, suffix) ? n - sl : 0;
}

void mig_boot_id(char *buf, size_t size)
{
    char *s = NULL;
    size_t n;
    /* Two test "hosts" in network namespaces share one kernel's boot id. */
    const char *fake = getenv("VMMIG_BOOT_ID");
    if (fake && *fake) {
        strlcpy0(buf, fake, size);
        return;
    }
    if (read_file("/proc/sys/kernel/random/boot_id", &s, &n)) {
        strlcpy0(buf, "unknown", size);
        return;
    }
    s[strcspn(s, "\n")] = 0;
    strlcpy0(buf, s, size);
    free(s);
}

static bool hook_name_ok(const char *n)
{
    if (!*n)
        return false;
    for (; *n; n++)
        if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
              *n == '_' || *n == '-'))
            return false;
    return true;
}

int mig_run_hooks(const char *role, const char *domain, const char *uuid, const char *from,
                  const char *to)
{
    const char *dir = getenv("VMMIG_HOOKS_DIR");
    struct dirent **ents = NULL;
    int n, failed = 0;

    if (!dir || !*dir)
        dir = "/etc/vmmig/hooks.d";
    n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0)
        return 0; /* no hooks directory: nothing to run */
    for (int i = 0; i < n; i++) {
        char path[1024];
        struct stat st;
        if (!hook_name_ok(ents[i]->d_name))
            goto next;
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        if (stat(path, &st) || !S_ISREG(st.st_mode) || access(path, X_OK))
            goto next;
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            error_msg("hook %s: fork: %s", path, strerror(errno));
            failed++;
            goto next;
        }
        if (pid == 0) {
            setenv("VMMIG_ROLE", role, 1);
            setenv("VMMIG_DOMAIN", domain, 1);
            setenv("VMMIG_UUID", uuid, 1);
            setenv("VMMIG_FROM", from, 1);
            setenv("VMMIG_TO", to, 1);
            int nul = open("/dev/null", O_RDONLY);
            if (nul >= 0)
                dup2(nul, 0);
            execl(path, path, "migrated", domain, from, to, (char *)NULL);
            _exit(127);
        }
        int status = 0, waited = 0;
        for (;;) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid)
                break;
            if (r < 0 && errno != EINTR)
                break;
            if (waited >= 30000) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                error_msg("hook %s: killed after 30 s", path);
                status = -1;
                break;
            }
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
            waited += 20;
        }
        if (status == -1)
            failed++;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            printf("hook %s: ok\n", ents[i]->d_name);
        else {
            error_msg("hook %s: %s %d", path, WIFEXITED(status) ? "exit" : "signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            failed++;
        }
    next:
        free(ents[i]);
    }
    free(ents);
    fflush(stdout);
    return failed;
}
