#!/usr/bin/env bash
# Throughput of `verify` and `compact` against the disk's sequential read speed, in one run.
#
#   scripts/bench-tools.sh STORE_DIR [RUNS]
#
# STORE_DIR is a closed store (e.g. built by `examples/fill.rs` and `examples/lifecycle_mark.rs`).
# Each measurement starts with a cold page cache when /proc/sys/vm/drop_caches is writable (root);
# otherwise the figures are for a warm cache and say so. Compaction runs on a fresh copy each time.
# Prints one line per run and the medians; MB = 10^6 bytes of segment files.
set -euo pipefail
dir=${1:?usage: bench-tools.sh STORE_DIR [RUNS]}
runs=${2:-3}
bin=${STATESTORE_BIN:-target/release/statestore}
bytes=$(cat "$dir"/*.seg | wc -c)
cold=yes
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || cold=no; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
mbs() { echo "scale=1; $bytes / 1000000 / $1" | bc -l; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cat_s=(); verify_s=(); compact_s=()
for r in $(seq "$runs"); do
  drop; c=$(secs cat "$dir"/*.seg)
  drop; v=$(secs "$bin" verify --data-dir "$dir")
  copy=$(mktemp -d "${TMPDIR:-/tmp}/bench-compact.XXXX")
  cp -r "$dir"/. "$copy"/
  drop; k=$(secs "$bin" compact --data-dir "$copy")
  rm -rf "$copy"
  printf 'run %d: cat %.2f s (%s MB/s), verify %.2f s (%s MB/s), compact %.2f s (%s MB/s)\n' \
    "$r" "$c" "$(mbs "$c")" "$v" "$(mbs "$v")" "$k" "$(mbs "$k")"
  cat_s+=("$c"); verify_s+=("$v"); compact_s+=("$k")
done
mc=$(printf '%s\n' "${cat_s[@]}" | median)
mv=$(printf '%s\n' "${verify_s[@]}" | median)
mk=$(printf '%s\n' "${compact_s[@]}" | median)
echo "segments: $bytes bytes; cold cache: $cold"
printf 'median: cat %s MB/s, verify %s MB/s (%.2fx of cat), compact %s MB/s (%.2fx of cat)\n' \
  "$(mbs "$mc")" "$(mbs "$mv")" "$(echo "$mc / $mv" | bc -l)" "$(mbs "$mk")" "$(echo "$mc / $mk" | bc -l)"
