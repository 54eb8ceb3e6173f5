#!/bin/sh
# Measures hit latency against working-set size for this project, `cached`, quick_cache and moka
# (cache-core/benches/working_set.rs) and draws docs/working_set.svg from it.
set -e
cd "$(dirname "$0")/.."
cargo bench -p cache-core --bench working_set
python3 scripts/plot_working_set.py target/working_set.csv docs/working_set.svg
