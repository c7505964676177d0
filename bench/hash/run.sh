#!/bin/bash
# bench/hash/run.sh - vmmig's own hashes against OpenSSL's (`make bench`).
#
# Every byte of a migration stream is hashed on both hosts (BLAKE2b-256
# content ids, vmmig-protocol(7)), and blockmirror hashes whole disks
# (SHA-256 per block, for stale replicas and verify).  vmmig links no crypto
# library (static musl build), so its hashes are its own: lib/blake2b.c
# (with a four-message AVX2 variant, blake2b_many(), chosen at run time),
# and lib/sha256.c with SHA-NI code chosen at run time.  Reference, in the same
# run on the same CPU: `openssl speed -evp` over 1 MiB buffers (OpenSSL's
# assembly).  Target: SHA-256 with the CPU's extensions >= 0.8x OpenSSL's.
#
# Environment: BENCH_HASH_MB=256 (MiB per timing), BENCH_HASH_ROUNDS=3 (best
# of N), CC=cc.  Reports; exits 0 even when the target is missed.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
: "${CC:=cc}"
BIN=$TOP/build/bench/hash
mkdir -p "$TOP/build/bench"
$CC -O2 -std=c11 -I"$TOP/lib" -o "$BIN" "$TOP/bench/hash/hash.c" "$TOP/lib/sha256.c" \
    "$TOP/lib/blake2b.c" || exit 1
command -v openssl >/dev/null || { echo "bench/hash: openssl not installed; skipped" >&2; exit 0; }

ours=$("$BIN") || exit 1
get() { awk -v k="$1" '$1 == k { print $2 }' <<<"$ours"; }
# openssl speed's "k" is 1000 bytes: MiB/s = k * 1000 / 1048576
ossl() {
    openssl speed -seconds 2 -bytes 1048576 -evp "$1" 2>/dev/null |
        awk -v a="$1" '$1 == a { sub(/k$/, "", $2); printf "%.0f", $2 * 1000 / 1048576 }'
}
ref_sha=$(ossl sha256)
ref_b2=$(ossl blake2b512)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

printf '%-32s %10s %10s  %-22s %6s  %s\n' "bench hash (MiB/s, 1 MiB buffers)" ours reference \
    "reference is" ratio target
printf '%-32s %10s %10s  %-22s %6s  %s\n' "BLAKE2b-256 (content id)" "$(get blake2b-256)" \
    "$ref_b2" "openssl blake2b512" "$(ratio "$(get blake2b-256)" "$ref_b2")" "(report)"
# four 256 KiB chunks of each MiB in one blake2b_many() call, as vmmig
# send hashes a full read and vmmig receive verifies what has queued up
printf '%-32s %10s %10s  %-22s %6s  %s\n' "BLAKE2b-256 x4, portable loop" \
    "$(get blake2b-256-x4-portable)" "$ref_b2" "openssl blake2b512" \
    "$(ratio "$(get blake2b-256-x4-portable)" "$ref_b2")" "(report)"
if [ -n "$(get blake2b-256-x4-avx2)" ]; then
    printf '%-32s %10s %10s  %-22s %6s  %s\n' "BLAKE2b-256 x4, AVX2 lanes" \
        "$(get blake2b-256-x4-avx2)" "$ref_b2" "openssl blake2b512" \
        "$(ratio "$(get blake2b-256-x4-avx2)" "$ref_b2")" "(report)"
else
    echo "BLAKE2b-256 x4, AVX2 lanes: this CPU has no AVX2"
fi
printf '%-32s %10s %10s  %-22s %6s  %s\n' "SHA-256, portable C" "$(get sha256-portable)" \
    "$ref_sha" "openssl sha256" "$(ratio "$(get sha256-portable)" "$ref_sha")" "(report)"
if [ -n "$(get sha256-shani)" ]; then
    r=$(ratio "$(get sha256-shani)" "$ref_sha")
    verdict=$(awk -v r="$r" 'BEGIN { print (r >= 0.8 ? "met" : "MISSED") }')
    printf '%-32s %10s %10s  %-22s %6s  %s\n' "SHA-256, SHA-NI" "$(get sha256-shani)" \
        "$ref_sha" "openssl sha256" "$r" ">= 0.8x $verdict"
else
    echo "SHA-256, SHA-NI: this CPU has no SHA extensions"
fi
