#!/bin/bash
# man.t - the man pages in man/ format without a single warning, refer only
# to vmmig pages that exist, and cannot drift from the applets' --help:
# every long option an applet's --help prints must be documented in the
# OPTIONS section of that applet's page (and every "-x, --long" pair as
# such), and an applet page's OPTIONS section may name no long option that
# --help does not know.  Every applet `vmmig --list` prints needs a page.
#
# Needs groff (Debian: groff-base) and man-db; the option checks need
# build/bin/vmmig (`make`).  VMMIG overrides the binary under test,
# VMMIG_MAN_DIR the directory of pages.
. "$(dirname "$0")/lib/tap.sh"

TOP=$(cd "$(dirname "$0")/.." && pwd)
: "${VMMIG:=$TOP/build/bin/vmmig}"
MAN=${VMMIG_MAN_DIR:-$TOP/man}

command -v groff >/dev/null || skip_all "groff not installed (Debian package groff-base)"
command -v man >/dev/null || skip_all "man not installed (Debian package man-db)"

export LC_ALL=C.UTF-8 MANWIDTH=80
unset MANPAGER PAGER MANOPT GROFF_SGR

# Which page documents which applet ("vmmig" is `vmmig` itself).
declare -A PAGE_OF=(
    [vmmig]=vmmig.1
    [vmmigfs]=vmmigfs.8
    [lock]=vmmig-lock.1
    [unlock]=vmmig-lock.1
    [migrate]=vmmig-migrate.1
    [guestctl]=guestctl.1
    [send]=vmmig-send.8
    [receive]=vmmig-receive.8
    [comigrate]=vmmig-comigrate.1
    [console]=vmmig-console.1
    [blockmirror]=vmmig-blockmirror.8
    [create]=vmmig-create.1
)

# render PAGE: plain ASCII text, one paragraph per line (no filling breaks,
# no hyphenation), so that options and names are never split.
render() {
    groff -man -Tascii -rLL=2000n -rHY=0 -P-cbou "$1" 2>/dev/null
}

# section TEXT NAME: the body of top-level section NAME of a rendered page.
section() {
    printf '%s\n' "$1" | awk -v s="$2" '$0 == s { f = 1; next } /^[A-Z]/ { f = 0 } f'
}

# long_opts TEXT: the distinct --options in TEXT, one per line.
long_opts() {
    printf '%s\n' "$1" | grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*' |
        sed 's/^[^-]*//' | sort -u
}

# has_word TEXT WORD: WORD occurs in TEXT, not as part of a longer option.
has_word() {
    printf '%s\n' "$1" | grep -qE -- "(^|[^A-Za-z0-9-])$2([^A-Za-z0-9-]|\$)"
}

# ---------------------------------------------------------------------------
# (a) Every page formats cleanly.

shopt -s nullglob
pages=("$MAN"/*.[0-9])
shopt -u nullglob
[ "${#pages[@]}" -gt 0 ] || bail_out "no man pages in $MAN"

for p in "${pages[@]}"; do
    f=${p##*/}
    out=$(groff -man -ww -z "$p" 2>&1)
    st=$?
    [ "$st" -eq 0 ] && [ -z "$out" ]
    ok $? "$f: groff -man -ww -z gives no warnings" || diag "$out"

    out=$(man -l --warnings -E UTF-8 -Tutf8 "$p" 2>&1 >/dev/null)
    st=$?
    [ "$st" -eq 0 ] && [ -z "$out" ]
    ok $? "$f: man -l --warnings gives no warnings" || diag "$out"

    # .TH NAME SECTION agrees with the file name (vmmig.policy.5: VMMIG.POLICY 5).
    read -r _ th_name th_sect _ < <(grep -m1 '^\.TH ' "$p")
    want_name=${f%.*}
    want_sect=${f##*.}
    [ "${th_name,,}" = "${want_name,,}" ] && [ "$th_sect" = "$want_sect" ]
    ok $? "$f: .TH names it ${want_name^^}($want_sect)" ||
        diag "  .TH says: $th_name $th_sect"

    # References to vmmig's own pages (".BR vmmig\-lock (1)") must resolve.
    missing=
    while read -r ref; do
        [ -n "$ref" ] || continue
        [ -f "$MAN/$ref" ] || missing+=" $ref"
    done < <(sed -n 's/\\-/-/g; s/^\.[BI]R *\(\(vmmig\|guestctl\)[A-Za-z0-9.-]*\) *(\([0-9]\)).*/\1.\3/p' "$p" | sort -u)
    [ -z "$missing" ]
    ok $? "$f: every vmmig page it refers to exists" || diag "  missing:$missing"
done

# ---------------------------------------------------------------------------
# (b) Pages agree with --help.

if [ ! -x "$VMMIG" ]; then
    fail "$VMMIG is built (run make)"
    done_testing
fi

applets=$("$VMMIG" --list)
ok $? "vmmig --list works"
[ -n "$applets" ]
ok $? "vmmig --list names applets"

declare -A HELPS # page -> the --help texts of its applets
for a in "" $applets; do
    label=${a:-vmmig}
    page=${PAGE_OF[$label]-}
    if [ -z "$page" ]; then
        fail "applet $label has a man page (add it to PAGE_OF in tests/man.t)"
        continue
    fi
    if [ ! -f "$MAN/$page" ]; then
        fail "$label: man/$page exists"
        continue
    fi
    if [ -n "$a" ]; then
        help=$("$VMMIG" "$a" --help 2>&1)
    else
        help=$("$VMMIG" --help 2>&1)
    fi
    st=$?
    [ "$st" -eq 0 ] && [ -n "$help" ]
    ok $? "$label: --help exits 0 and prints help" || { diag "  exit $st: $help"; continue; }
    HELPS[$page]+=$help$'\n'

    text=$(render "$MAN/$page")
    opts_sec=$(section "$text" OPTIONS)
    # `vmmig --help` also quotes the applets' summaries (e.g. unlock's
    # --force): for vmmig.1, the whole page counts.
    [ -z "$a" ] && opts_sec=$text

    missing=
    for o in $(long_opts "$help"); do
        has_word "$opts_sec" "$o" || missing+=" $o"
    done
    [ -z "$missing" ]
    ok $? "$label: every long option of --help is documented in $page" ||
        diag "  not documented:$missing"

    # "  -r, --reason TEXT": the page must pair them the same way.
    missing=
    while read -r pair; do
        [ -n "$pair" ] || continue
        printf '%s\n' "$opts_sec" | grep -qF -- "$pair" || missing+=" '$pair'"
    done < <(printf '%s\n' "$help" | sed -n 's/^ *\(-[A-Za-z0-9], --[a-z][a-z0-9-]*\).*/\1/p')
    [ -z "$missing" ]
    ok $? "$label: every '-x, --long' pair of --help is in $page" ||
        diag "  not documented:$missing"
done

# The reverse: an applet page documents no long option its applets lack.
# (vmmig.1 is left out: `vmmig --help` does not list --list and --help.)
for page in $(printf '%s\n' "${!HELPS[@]}" | sort); do
    [ "$page" = vmmig.1 ] && continue
    opts_sec=$(section "$(render "$MAN/$page")" OPTIONS)
    extra=
    for o in $(long_opts "$opts_sec"); do
        has_word "${HELPS[$page]}" "$o" || extra+=" $o"
    done
    [ -z "$extra" ]
    ok $? "$page: OPTIONS names only options that --help knows" ||
        diag "  not in --help:$extra"
done

done_testing
