#!/bin/sh
# tests/fuzz/run.sh - build the fuzz targets with clang's libFuzzer
# (+ ASan/UBSan) and run them for a bounded time: proto_fuzz (the control
# protocol) and nbd_fuzz (the NBD server's handshake and request parser,
# lib/nbd.c), each for half of the time.
#
#   tests/fuzz/run.sh [SECONDS]      run for SECONDS in all (default 20), exit 1 on a crash
#   tests/fuzz/run.sh --seeds        rewrite the seed corpora tests/fuzz/corpus/{proto,nbd}/
#   tests/fuzz/run.sh --build        only build
#
# The seeds in tests/fuzz/corpus/TARGET/ are read, never written: what the
# fuzzer learns goes to build/fuzz/corpus/ and build/fuzz/corpus-nbd/ (kept
# between runs), crashes to build/fuzz/artifacts/.  Reproduce one with:
# build/fuzz/proto_fuzz FILE (or build/fuzz/nbd_fuzz FILE)
# Environment: CLANG (default clang, else clang-14), FUZZ_JOBS (parallel
# workers, default 1), FUZZ_ARGS (more libFuzzer flags).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
out=build/fuzz
seeds=tests/fuzz/corpus/proto
lib="lib/proto.c lib/sha256.c lib/polyval.c lib/util.c"

CLANG=${CLANG:-$(command -v clang || command -v clang-14 || true)}
[ -n "$CLANG" ] || { echo "run.sh: clang not found (Debian: clang-14)" >&2; exit 2; }

warn="-std=c11 -Wall -Wextra -Werror -Wno-unknown-warning-option -Wno-format-truncation"
# Fixed nonces in this build only: inputs can then carry valid proofs.
fuzzing=-DPROTO_FUZZING=0x5a
mkdir -p "$out/corpus" "$out/corpus-nbd" "$out/artifacts"

# $warn, $fuzzing and $lib are lists of words: split on purpose.
# shellcheck disable=SC2086
build() {
	"$CLANG" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined $warn $fuzzing -Ilib -Itests/fuzz \
		-o "$out/proto_fuzz" tests/fuzz/proto_fuzz.c $lib
	"$CLANG" -g -O1 $warn $fuzzing -Ilib -Itests/fuzz -o "$out/mkcorpus" tests/fuzz/mkcorpus.c $lib
	"$CLANG" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined $warn -Ilib -o "$out/nbd_fuzz" tests/fuzz/nbd_fuzz.c \
		lib/nbd.c lib/sha256.c -lpthread
}

case "${1:-}" in
--build)
	build
	exit 0
	;;
--seeds)
	build
	rm -rf "$seeds"
	mkdir -p "$seeds"
	"$out/mkcorpus" "$seeds"
	rm -rf tests/fuzz/corpus/nbd
	python3 tests/fuzz/nbd_seeds.py tests/fuzz/corpus/nbd
	exit 0
	;;
esac

secs=${1:-20}
build
jobs=${FUZZ_JOBS:-1}
half=$(((secs + 1) / 2))
common="-timeout=10 -rss_limit_mb=2048 -max_len=4096 -artifact_prefix=$out/artifacts/ -print_final_stats=1"
if [ "$jobs" -gt 1 ]; then
	common="$common -jobs=$jobs -workers=$jobs"
fi
# $common and FUZZ_ARGS are word-split on purpose (several flags).
# shellcheck disable=SC2086
"$out/proto_fuzz" -max_total_time="$half" $common -dict=tests/fuzz/proto.dict ${FUZZ_ARGS:-} \
	"$out/corpus" "$seeds"
# shellcheck disable=SC2086
"$out/nbd_fuzz" -max_total_time="$((secs - half > 0 ? secs - half : 1))" $common \
	-dict=tests/fuzz/nbd.dict ${FUZZ_ARGS:-} "$out/corpus-nbd" tests/fuzz/corpus/nbd
