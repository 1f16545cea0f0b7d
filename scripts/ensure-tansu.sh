#!/usr/bin/env bash
# Makes sure tansu (a Kafka-compatible broker, from crates.io) is installed where
# cutover-testkit looks for it: ~/.cache/cutover-test-tools/tansu/bin/tansu (or
# $CUTOVER_TANSU, the path of a tansu binary). The Kafka target's tests start a throwaway
# broker from it on a free loopback port, storing in memory. `cargo install --locked` builds it
# into that cache (never into the repository), once: 23.6 CPU-minutes, 41 min wall when it was
# measured on 2 cores shared with other builds.
# Quiet and quick when it is there; says what it does otherwise.
set -euo pipefail
version=0.6.0
root=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test-tools/tansu
bin=${CUTOVER_TANSU:-$root/bin/tansu}

if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -q "$version"; then
    exit 0
fi
if [[ -n ${CUTOVER_TANSU:-} ]]; then
    [[ -x $bin ]] && exit 0
    echo "ensure-tansu: CUTOVER_TANSU=$bin is not an executable" >&2
    exit 1
fi
echo "ensure-tansu: building tansu $version into $root (cargo install --locked; about 25 CPU-minutes, once)" >&2
start=$(date +%s)
# memory:// storage (what the tests use) is the dynostore engine, not in the default features.
nice -n 19 cargo install --quiet --locked --version "$version" --features dynostore --root "$root" tansu
echo "ensure-tansu: tansu $version installed in $(( $(date +%s) - start )) s" >&2
"$bin" --version >/dev/null
