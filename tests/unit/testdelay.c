/* The agents' test seam VMMIG_TEST_DELAY (mig_test_delay, lib/migjob.c). */
#define _GNU_SOURCE
#include "migjob.h"
#include "tap.h"

int main(void)
{
    is_int(mig_test_delay("stop:5", "stop", "web1"), 5, "POINT:S names its point");
    is_int(mig_test_delay("stop:5", "stop", NULL), 5, "  also before the domain is known");
    is_int(mig_test_delay("stopped:5", "stop", "web1"), -1, "a longer point name is another point");
    is_int(mig_test_delay("stop:5", "stopped", "web1"), -1, "a prefix of a point is not it");
    is_int(mig_test_delay("stop@web1:7", "stop", "web1"), 7, "POINT@DOMAIN:S for that domain");
    is_int(mig_test_delay("stop@web1:7", "stop", "web2"), -1, "  not for another");
    is_int(mig_test_delay("stop@web1:7", "stop", "web10"), -1, "  nor one it is a prefix of");
    is_int(mig_test_delay("stop@web10:7", "stop", "web1"), -1, "  nor one that is its prefix");
    is_int(mig_test_delay("stop@web1:7", "stop", NULL), -1, "  nor before the domain is known");
    is_int(mig_test_delay("stop@a:b:7", "stop", "a:b"), 7, "a domain name with a colon");
    is_int(mig_test_delay("stop@:7", "stop", ""), -1, "an empty domain names nothing");
    is_int(mig_test_delay("stop@web1", "stop", "web1"), -1, "no seconds: nothing");
    is_int(mig_test_delay("stop:", "stop", "web1"), -1, "empty seconds: nothing");
    is_int(mig_test_delay("stop:5s", "stop", "web1"), -1, "seconds that do not parse: nothing");
    is_int(mig_test_delay("stop:-1", "stop", "web1"), -1, "negative seconds: nothing");
    is_int(mig_test_delay("stop:3601", "stop", "web1"), -1, "over an hour: nothing");
    is_int(mig_test_delay("stop:0", "stop", "web1"), 0, "0 seconds: a delay of none");
    is_int(mig_test_delay(NULL, "stop", "web1"), -1, "unset: nothing");
    is_int(mig_test_delay("", "stop", "web1"), -1, "empty: nothing");
    is_int(mig_test_delay(":5", "", "web1"), -1, "an empty point is never named");
    done_testing();
}
