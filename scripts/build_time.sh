#!/bin/sh
# Build cost of many cached fns: generates two library crates of N (default 200) fns of
# `(u64, String) -> u64`, one with `#[cache_core::cached]`, one with `#[cached::proc_macro::cached]`,
# builds their dependencies once, then times rebuilding each crate alone from clean
# (`cargo clean -p <crate>` + `cargo build`), debug and release. Prints the seconds and ratios.
#
# Usage: scripts/build_time.sh [N]   (work directory: target/build-time)
set -e
N=${1:-200}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$ROOT/target/build-time"
mkdir -p "$WORK"
cd "$WORK"

gen() { # gen <crate> <attribute> <dependency line>
    mkdir -p "$1/src"
    cat > "$1/Cargo.toml" <<TOML
[package]
name = "$1"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$3

[workspace]
TOML
    : > "$1/src/lib.rs"
    i=0
    while [ "$i" -lt "$N" ]; do
        printf '%s\npub fn f%d(a: u64, b: String) -> u64 {\n    a.wrapping_add(b.len() as u64 * %d)\n}\n\n' "$2" "$i" "$i" >> "$1/src/lib.rs"
        i=$((i + 1))
    done
}

gen ours_fns '#[cache_core::cached]' "cache-core = { path = \"$ROOT/cache-core\" }"
gen cached_fns '#[cached::proc_macro::cached]' 'cached = "4"'

secs() { # secs <crate> <profile flag>
    (cd "$1" && cargo build --quiet $2 >/dev/null 2>&1) # dependencies, once
    (cd "$1" && cargo clean --quiet -p "$1" $2 >/dev/null 2>&1)
    start=$(date +%s.%N)
    (cd "$1" && cargo build --quiet $2)
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

for profile in debug release; do
    flag=""
    [ "$profile" = release ] && flag="--release"
    o=$(secs ours_fns "$flag")
    c=$(secs cached_fns "$flag")
    printf '%s: %d fns, cache-core %.1f s, cached %.1f s, ratio %.1fx\n' "$profile" "$N" "$o" "$c" "$(echo "$o / $c" | bc -l)"
done
