/* Post-copy recovery's shared parts (lib/pcrecover.h): migration ids,
 * RECOVER's payload (every missing or malformed field refused with why),
 * and the destination's marker (written, read back, malformed ones refused). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pcrecover.h"
#include "tap.h"
#include "util.h"

#define UUID "6a1c0f4e-7d2b-4c11-9e0a-c01d00000001"
#define ID "0123456789abcdef0123456789abcdef"

static int parse(const char *text, struct pcrec_req *req, char *err, size_t errlen)
{
    err[0] = 0;
    return pcrec_req_parse((const uint8_t *)text, (uint32_t)strlen(text), req, err, errlen);
}

int main(void)
{
    char a[PCREC_ID_LEN + 1], b[PCREC_ID_LEN + 1], err[200];
    struct pcrec_req req;

    /* ids */
    is_int(pcrec_id_new(a), 0, "pcrec_id_new");
    is_int(strlen(a), PCREC_ID_LEN, "an id has %d characters", PCREC_ID_LEN);
    ok(pcrec_id_valid(a), "a new id is valid: %s", a);
    pcrec_id_new(b);
    ok(strcmp(a, b), "two ids differ");
    ok(pcrec_id_valid(ID), "lowercase hex of the right length is valid");
    ok(!pcrec_id_valid("0123456789ABCDEF0123456789abcdef"), "uppercase is not");
    ok(!pcrec_id_valid("0123456789abcdef"), "too short is not");
    ok(!pcrec_id_valid(ID "0"), "too long is not");
    ok(!pcrec_id_valid("0123456789abcdef0123456789abcdeg"), "a non-hex digit is not");
    ok(!pcrec_id_valid(""), "empty is not");

    /* RECOVER */
    is_int(parse("uuid=" UUID "\nname=web1\nmigration=" ID "\n", &req, err, sizeof err), 0,
           "a RECOVER parses");
    is_str(req.uuid, UUID, "  uuid");
    is_str(req.name, "web1", "  name");
    is_str(req.id, ID, "  migration id");
    is_int(parse("uuid=" UUID "\nname=web1\nmigration=" ID, &req, err, sizeof err), 0,
           "the last newline may be missing");
    is_int(parse("name=web1\nmigration=" ID "\n", &req, err, sizeof err), -EBADMSG,
           "no uuid: refused");
    is_str(err, "RECOVER without a valid uuid", "  says why");
    is_int(parse("uuid=not-a-uuid\nname=web1\nmigration=" ID "\n", &req, err, sizeof err),
           -EBADMSG, "a bad uuid: refused");
    is_int(parse("uuid=" UUID "\nmigration=" ID "\n", &req, err, sizeof err), -EBADMSG,
           "no name: refused");
    is_str(err, "RECOVER without a valid name", "  says why");
    is_int(parse("uuid=" UUID "\nname=\nmigration=" ID "\n", &req, err, sizeof err), -EBADMSG,
           "an empty name: refused");
    is_int(parse("uuid=" UUID "\nname=web1\n", &req, err, sizeof err), -EBADMSG,
           "no migration id: refused");
    ok(strstr(err, "RECOVER without a valid migration id") != NULL, "  says why: %s", err);
    is_int(parse("uuid=" UUID "\nname=web1\nmigration=12345\n", &req, err, sizeof err),
           -EBADMSG, "a short migration id: refused");
    is_int(parse("uuid=" UUID "\nname=web1\nmigration=" ID "ff\n", &req, err, sizeof err),
           -EBADMSG, "a long migration id: refused");
    is_int(parse("uuid=" UUID "\nname=web1\nmigration\n", &req, err, sizeof err), -EBADMSG,
           "a line without '=': refused");
    is_int(parse("", &req, err, sizeof err), -EBADMSG, "an empty payload: refused");
    {
        static const uint8_t nul[] = "uuid=" UUID "\0\nname=web1\nmigration=" ID "\n";
        is_int(pcrec_req_parse(nul, sizeof nul - 1, &req, err, sizeof err), -EBADMSG,
               "a NUL byte: refused");
    }
    char longname[200];
    snprintf(longname, sizeof longname, "uuid=" UUID "\nname=%0100d\nmigration=" ID "\n", 7);
    is_int(parse(longname, &req, err, sizeof err), -EBADMSG, "a name too long: refused");

    /* the marker */
    struct pcrec_marker m = {.domid = 42, .resumed_ms = 1700000000123LL}, back;
    memcpy(m.id, ID, sizeof m.id);
    char dir[] = "/tmp/pcrec-unit.XXXXXX";
    ok(mkdtemp(dir) != NULL, "a state directory");
    is_int(pcrec_marker_read(dir, UUID, &back), -ENOENT, "no marker: -ENOENT");
    is_int(pcrec_marker_write(dir, UUID, &m), 0, "write a marker (making incoming/)");
    char path[300];
    pcrec_marker_path(dir, UUID, path, sizeof path);
    ok(strstr(path, "/incoming/" UUID ".postcopy") != NULL, "  beside the incoming lock: %s",
       path);
    is_int(pcrec_marker_read(dir, UUID, &back), 0, "read it back");
    is_str(back.id, ID, "  its id");
    is_int(back.domid, 42, "  its domid");
    is_int(back.resumed_ms, 1700000000123LL, "  when it first ran here");
    unlink(path);
    char incoming[300];
    snprintf(incoming, sizeof incoming, "%s/incoming", dir);
    rmdir(incoming);
    rmdir(dir);

    const char *bad[] = {
        "domid=42\n",
        "migration=" ID "\n",
        "migration=xyz\ndomid=42\n",
        "migration=" ID "\ndomid=-1\n",
        "migration=" ID "\ndomid=4294967295\n",
        "migration=" ID "\ndomid=x\n",
        "garbage",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        is_int(pcrec_marker_parse(bad[i], strlen(bad[i]), &back), -EBADMSG,
               "a malformed marker is refused (%zu)", i);
    static const char nores[] = "migration=" ID "\ndomid=7\n";
    is_int(pcrec_marker_parse(nores, strlen(nores), &back), 0, "resumed_ms may be missing");
    is_int(back.resumed_ms, 0, "  it is 0 then");

    /* the source's record, for an agent that takes over (send --recover) */
    struct pcrec_source src = {.host = "hostB"}, sback;
    memcpy(src.id, ID, sizeof src.id);
    char sdir[] = "/tmp/pcrec-unit.XXXXXX";
    ok(mkdtemp(sdir) != NULL, "a state directory for the source");
    is_int(pcrec_source_read(sdir, UUID, &sback), -ENOENT, "no source record: -ENOENT");
    is_int(pcrec_source_remove(sdir, UUID), -ENOENT, "  removing none: -ENOENT");
    is_int(pcrec_source_write(sdir, UUID, &src), 0, "write the source's record (making outgoing/)");
    pcrec_source_path(sdir, UUID, path, sizeof path);
    ok(strstr(path, "/outgoing/" UUID ".postcopy") != NULL, "  in outgoing/: %s", path);
    is_int(pcrec_source_read(sdir, UUID, &sback), 0, "read it back");
    is_str(sback.id, ID, "  its id");
    is_str(sback.host, "hostB", "  its destination");
    is_int(pcrec_source_remove(sdir, UUID), 0, "remove it");
    is_int(pcrec_source_read(sdir, UUID, &sback), -ENOENT, "  gone");
    struct pcrec_source badsrc = {.host = "host B"};
    memcpy(badsrc.id, ID, sizeof badsrc.id);
    is_int(pcrec_source_write(sdir, UUID, &badsrc), -EINVAL, "a host with a space: refused");
    memset(&badsrc, 0, sizeof badsrc);
    strcpy(badsrc.host, "hostB");
    is_int(pcrec_source_write(sdir, UUID, &badsrc), -EINVAL, "no id: refused");
    snprintf(incoming, sizeof incoming, "%s/outgoing", sdir);
    rmdir(incoming);
    rmdir(sdir);
    const char *badsrcs[] = {
        "host=hostB\n",
        "migration=" ID "\n",
        "migration=" ID "\nhost=\n",
        "migration=xyz\nhost=hostB\n",
    };
    for (size_t i = 0; i < sizeof badsrcs / sizeof *badsrcs; i++)
        is_int(pcrec_source_parse(badsrcs[i], strlen(badsrcs[i]), &sback), -EBADMSG,
               "a malformed source record is refused (%zu)", i);
    return done_testing();
}
