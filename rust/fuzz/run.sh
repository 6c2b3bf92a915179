#!/usr/bin/env bash
# Runs every cargo-fuzz target of the SIP parser and WebSocket codec for SECONDS each (default 15),
# starting from the committed seeds plus whatever corpus/ has gathered.
#
#   bash rust/fuzz/run.sh [SECONDS]
#
# SANITIZER=none makes it about 3x faster (no ASan); the default is address.
# Runs every target; exits non-zero if any crashed, printing the artifact that reproduces it:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir rust/fuzz TARGET ARTIFACT
set -euo pipefail

SECONDS_EACH="${1:-15}"
SANITIZER="${SANITIZER:-address}"
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$FUZZ_DIR/../.." && pwd)"
cd "$ROOT"

# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets stable rustc use them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

targets=(parse_message parse_stream parse_uri error_response ws_frames)
# Seeds: the RFC 4475 / 5118 messages for everything that takes a message;
# parse_uri gets its own small set of URIs and header values.
seeds_for() {
    case "$1" in
        parse_uri) echo "$FUZZ_DIR/seeds/parse_uri" ;;
        ws_frames) echo "$FUZZ_DIR/seeds/ws_frames" ;;
        *) echo "$FUZZ_DIR/seeds/parse_message" ;;
    esac
}

cargo fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER"

failed=0
for t in "${targets[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    artifacts="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$artifacts/run.log"
    echo "== $t: ${SECONDS_EACH}s (sanitizer: $SANITIZER)"
    start=$(date +%s)
    set +e
    cargo fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" "$t" "$corpus" "$(seeds_for "$t")" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    echo "   $((  $(date +%s) - start ))s, ${runs:-?} execs, exit $rc"
    if [ "$rc" -ne 0 ]; then
        failed=1
        grep -E "panicked at|^thread|ERROR: |SUMMARY" "$log" | head -n 5 || true
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //')
        echo "FUZZ CRASH in $t: artifact ${artifact:-(none; see $log)}"
        echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir rust/fuzz $t ${artifact:-}"
    fi
done
exit "$failed"
