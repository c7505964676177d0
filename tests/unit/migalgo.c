/* The algorithm lists and the destination's choice (lib/migjob.c). */
#define _GNU_SOURCE
#include <errno.h>

#include "migjob.h"
#include "tap.h"

int main(void)
{
    char out[MIG_ALGO_MAX], err[200];

    ok(mig_algo_known("precopy") && mig_algo_known("postcopy") && mig_algo_known("stopcopy"),
       "the three algorithms are known");
    ok(!mig_algo_known("") && !mig_algo_known("pre") && !mig_algo_known("precopy,") &&
           !mig_algo_known("PRECOPY"),
       "no prefix, empty name, list or other case is");
    ok(mig_algo_listed("precopy,stopcopy", "stopcopy"), "listed: last element");
    ok(!mig_algo_listed("precopy,stopcopy", "copy") && !mig_algo_listed("", "precopy"),
       "not listed: a part of a name, an empty list");

    is_int(mig_algo_list_check("precopy,stopcopy", NULL, err, sizeof err), 0, "a good list");
    is_int(mig_algo_list_check("", NULL, err, sizeof err), -EINVAL, "empty list: EINVAL");
    is_int(mig_algo_list_check("precopy,,stopcopy", NULL, err, sizeof err), -EINVAL,
           "an empty element: EINVAL");
    is_int(mig_algo_list_check("precopy,turbo", NULL, err, sizeof err), -EINVAL,
           "unknown element: EINVAL");
    ok(strstr(err, "unknown algorithm 'turbo'"), "  says which: %s", err);
    is_int(mig_algo_list_check("postcopy", "precopy,stopcopy", err, sizeof err), -EINVAL,
           "an element the engine cannot do: EINVAL");
    ok(strstr(err, "postcopy"), "  says which: %s", err);
    is_int(mig_algo_list_check("stopcopy,stopcopy", NULL, err, sizeof err), -EINVAL,
           "an element twice: EINVAL");

    is_int(mig_algo_choose("precopy,postcopy,stopcopy", "", "precopy,postcopy,stopcopy", out,
                           sizeof out, err, sizeof err),
           0, "no preference: chosen");
    is_str(out, "precopy", "  the destination's first (precopy)");
    is_int(mig_algo_choose("stopcopy", "", "precopy,stopcopy", out, sizeof out, err, sizeof err),
           0, "an old source listing only stopcopy");
    is_str(out, "stopcopy", "  gets stopcopy");
    is_int(mig_algo_choose("precopy,postcopy,stopcopy", "postcopy", "precopy,postcopy,stopcopy",
                           out, sizeof out, err, sizeof err),
           0, "postcopy asked for, both can");
    is_str(out, "postcopy", "  postcopy");
    is_int(mig_algo_choose("precopy,postcopy,stopcopy", "postcopy", "precopy,stopcopy", out,
                           sizeof out, err, sizeof err),
           -ENOTSUP, "postcopy asked for, the destination cannot: ENOTSUP");
    ok(strstr(err, "postcopy is not supported here (this host does precopy,stopcopy)"),
       "  says why: %s", err);
    ok(!out[0], "  and chooses nothing");
    is_int(mig_algo_choose("precopy,stopcopy", "postcopy", "precopy,postcopy", out, sizeof out,
                           err, sizeof err),
           -ENOTSUP, "asked for but not listed by the source itself: ENOTSUP");
    is_int(mig_algo_choose("precopy", "warp", "precopy", out, sizeof out, err, sizeof err),
           -ENOTSUP, "an unknown algorithm asked for: ENOTSUP");
    ok(strstr(err, "unknown algorithm 'warp'"), "  says so: %s", err);
    is_int(mig_algo_choose("postcopy", "", "precopy,stopcopy", out, sizeof out, err, sizeof err),
           -ENOTSUP, "nothing in common: ENOTSUP");
    ok(strstr(err, "no algorithm in common"), "  says so: %s", err);
    is_int(mig_algo_choose("", "", "precopy", out, sizeof out, err, sizeof err), -ENOTSUP,
           "a source that lists none: ENOTSUP");
    return done_testing();
}
