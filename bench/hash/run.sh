#!/bin/bash
# bench/hash/run.sh - vmmig's own hashes against OpenSSL's (`make bench`).
#
# Every byte of a migration stream is hashed on both hosts (POLYVAL under a
# key of the connection, then HMAC'd: the chunks' content ids,
# vmmig-protocol(7)), and blockmirror hashes whole disks (SHA-256 per
# block, for stale replicas and verify).  vmmig links no crypto library
# (static musl build), so its hashes are its own: lib/polyval.c (RFC 8452;
# portable C, PCLMULQDQ, and VPCLMULQDQ where the CPU and the OS have
# AVX-512, chosen at run time) and lib/sha256.c with SHA-NI code chosen at
# run time.  Reference, in the same run on the same CPU: `openssl speed
# -evp` over 1 MiB buffers (OpenSSL's assembly).  OpenSSL has no POLYVAL;
# its reference is AES-128-GCM, GHASH (the same kind of multiply) plus
# AES-CTR, so more work a byte.  Targets: SHA-256 with the CPU's extensions
# >= 0.8x OpenSSL's SHA-256; POLYVAL with the carry-less multiply >= 1.0x
# OpenSSL's AES-128-GCM (the hash alone at least as fast as OpenSSL's hash
# and cipher together).  PCLMULQDQ alone is timed in calls of 15 blocks,
# which the AVX-512 code never takes.
#
# Environment: BENCH_HASH_MB=256 (MiB per timing), BENCH_HASH_ROUNDS=3 (best
# of N), CC=cc.  Reports; exits 0 even when the target is missed.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
: "${CC:=cc}"
BIN=$TOP/build/bench/hash
mkdir -p "$TOP/build/bench"
$CC -O2 -std=c11 -I"$TOP/lib" -o "$BIN" "$TOP/bench/hash/hash.c" "$TOP/lib/sha256.c" \
    "$TOP/lib/polyval.c" || exit 1
command -v openssl >/dev/null || { echo "bench/hash: openssl not installed; skipped" >&2; exit 0; }

ours=$("$BIN") || exit 1
get() { awk -v k="$1" '$1 == k { print $2 }' <<<"$ours"; }
# openssl speed's "k" is 1000 bytes: MiB/s = k * 1000 / 1048576 (ciphers are
# named in capitals: AES-128-GCM)
ossl() {
    openssl speed -seconds 2 -bytes 1048576 -evp "$1" 2>/dev/null |
        awk -v a="$1" 'tolower($1) == tolower(a) { sub(/k$/, "", $2); printf "%.0f", $2 * 1000 / 1048576 }'
}
ref_sha=$(ossl sha256)
ref_gcm=$(ossl aes-128-gcm)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

printf '%-32s %10s %10s  %-22s %6s  %s\n' "bench hash (MiB/s, 1 MiB buffers)" ours reference \
    "reference is" ratio target
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
printf '%-32s %10s %10s  %-22s %6s  %s\n' "POLYVAL (content id), portable" \
    "$(get polyval-portable)" "$ref_gcm" "openssl aes-128-gcm" \
    "$(ratio "$(get polyval-portable)" "$ref_gcm")" "(report)"
# the ratio to OpenSSL's AES-128-GCM >= 1.0: met or MISSED
gcm1() { awk -v r="$(ratio "$1" "$ref_gcm")" 'BEGIN { print (r >= 1.0 ? "met" : "MISSED") }'; }
if [ -n "$(get polyval-clmul)" ]; then
    printf '%-32s %10s %10s  %-22s %6s  %s\n' "POLYVAL, PCLMULQDQ (240 B calls)" \
        "$(get polyval-clmul)" "$ref_gcm" "openssl aes-128-gcm" \
        "$(ratio "$(get polyval-clmul)" "$ref_gcm")" ">= 1.0x $(gcm1 "$(get polyval-clmul)")"
    # the kernel lists avx512f only where it saves the ZMM state
    if grep -qw vpclmulqdq /proc/cpuinfo && grep -qw avx512f /proc/cpuinfo; then
        fast="POLYVAL, VPCLMULQDQ AVX-512"
    else
        fast="POLYVAL, default (PCLMULQDQ)"
    fi
    printf '%-32s %10s %10s  %-22s %6s  %s\n' "$fast" "$(get polyval-fast)" "$ref_gcm" \
        "openssl aes-128-gcm" "$(ratio "$(get polyval-fast)" "$ref_gcm")" \
        ">= 1.0x $(gcm1 "$(get polyval-fast)")"
else
    echo "POLYVAL, PCLMULQDQ: this CPU has no PCLMULQDQ"
fi
