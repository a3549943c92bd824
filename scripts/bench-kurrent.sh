#!/usr/bin/env bash
# Throughput of the KurrentDB adapter against the native API, in one run against one server.
#
#   scripts/bench-kurrent.sh [ROUNDS]          # default 3
#
# Builds release, starts one `statestore serve` on a fresh temp data directory (default
# configuration: --fsync always), waits 5 s (a new store zero-fills its first two segments),
# then for each round and workload runs, one after the other in an order that rotates every
# round, on fresh streams each time (every run has its own run id):
#   native       `statestore bench`                       (tonic client, TCP_NODELAY on)
#   kurrent      `examples/kurrent_load`, official `kurrentdb` client as shipped
#   kurrent-nd   the same with an LD_PRELOAD shim that keeps TCP_NODELAY on. The client as
#                shipped turns it off; before the server re-armed TCP_QUICKACK (360816f) each
#                call then waited ~40 ms for the server's delayed ACK. Since then the two
#                variants should agree. Needs a C compiler; skipped without one.
# For each run it records the load average, throughput, latency, and the CPU time of the server
# and of the load tool during the measured window (both sampled from /proc/PID/stat every
# 0.1 s), per event; the server's without its index-checkpoint and pre-allocation threads.
# Server and load tool share the machine's CPUs, so both bound throughput.
# Prints every run, then per workload and variant the medians and the ratios to native:
# cost = native ev/s / variant ev/s (above 1: slower), srv/ev = server CPU per event / native's.
#
# Environment:
#   WORKLOADS   space-separated MODE:CLIENTS:BATCH[:API] (default below; API append|batch
#               applies to kurrent_load's appends)
#   DURATION    seconds of load per run (5)
#   STREAMS     --streams (1000)
#   EVENT_BYTES --event-bytes (100)
#   PORT        listen port (2913; not the default 2113, to stay clear of other servers)
#   SERVER_PRELOAD  an LD_PRELOAD for the server (diagnostics, e.g. a TCP_QUICKACK shim)
#   VARIANTS    which of "native kurrent kurrent-nd" to run (all)
#   NO_BUILD=1  skip the cargo build
#   STATESTORE_BIN, KURRENT_LOAD_BIN  the binaries (default: target/release); the script runs
#               copies of them
#   KEEP=1      keep the temp directory (data, logs, raw results)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
workloads=${WORKLOADS:-"append:1:1 append:8:100 read:8:100"}
duration=${DURATION:-5}
streams=${STREAMS:-1000}
event_bytes=${EVENT_BYTES:-100}
port=${PORT:-2913}
variants=${VARIANTS:-"native kurrent kurrent-nd"}
bin=${STATESTORE_BIN:-target/release/statestore}
load=${KURRENT_LOAD_BIN:-target/release/examples/kurrent_load}

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release --examples >&2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-kurrent.XXXX")
server_pid=''
sampler_pid=''
cleanup() {
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT
# Run copies, so a rebuild in the shared target directory cannot swap a binary mid-run.
cp "$bin" "$work/statestore"
cp "$load" "$work/kurrent_load"
commit=$(git rev-parse --short HEAD 2> /dev/null || echo '?')
git diff --quiet HEAD -- src build.rs Cargo.toml 2> /dev/null || commit+=' + uncommitted changes'
echo "statestore: $commit, built $(date -r "$bin" +%T)"
bin=$work/statestore
load=$work/kurrent_load

# The TCP_NODELAY shim: forces TCP_NODELAY=1 on connect and whenever the program sets it.
shim=''
if [[ " $variants " == *" kurrent-nd "* ]]; then
  cat > "$work/nodelay.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
int setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
    static int (*real)(int, int, int, const void *, socklen_t);
    static const int one = 1;
    if (!real) real = dlsym(RTLD_NEXT, "setsockopt");
    if (level == IPPROTO_TCP && name == TCP_NODELAY) { val = &one; len = sizeof one; }
    return real(fd, level, name, val, len);
}
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = dlsym(RTLD_NEXT, "connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real(fd, addr, len);
}
EOF
  if cc -O2 -shared -fPIC -o "$work/nodelay.so" "$work/nodelay.c" -ldl 2>/dev/null; then
    shim=$work/nodelay.so
  else
    echo "no C compiler: skipping kurrent-nd" >&2
    variants=${variants//kurrent-nd/}
  fi
fi

# One server for the whole run.
env ${SERVER_PRELOAD:+LD_PRELOAD=$SERVER_PRELOAD} "$bin" serve --data-dir "$work/data" \
  --listen "127.0.0.1:$port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q 'serving gRPC' "$work/server.log" && break
  kill -0 "$server_pid" || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
sleep 5

# A process's CPU ticks (utime + stime) every 0.1 s while it lives: "epoch_seconds ticks".
sample_cpu() { # PID
  local stat rest f
  while read -r stat 2> /dev/null < "/proc/$1/stat"; do
    rest=${stat##*) }
    read -r -a f <<< "$rest"
    echo "$EPOCHREALTIME $(( f[11] + f[12] ))"
    sleep 0.1
  done
}
# The server's: "epoch_seconds ticks foreground_ticks", where foreground leaves out the
# index-checkpoint thread and the segment pre-allocation threads. Their work comes in lumps
# (every 500,000 events, every 64 MiB) that land in one run's window and not another's, and it
# is the engine's, the same whichever API wrote the events.
sample_server() { # PID
  local stat rest f t comm total tid
  declare -A bg=()
  while read -r stat 2> /dev/null < "/proc/$1/stat"; do
    rest=${stat##*) }
    read -r -a f <<< "$rest"
    total=$(( f[11] + f[12] ))
    for t in /proc/"$1"/task/*; do
      read -r comm 2> /dev/null < "$t/comm" || continue
      case $comm in
        statestore-chec* | statestore-prea*)
          read -r stat 2> /dev/null < "$t/stat" || continue
          rest=${stat##*) }
          read -r -a f <<< "$rest"
          tid=${t##*/}
          bg[$tid]=$(( f[11] + f[12] )) ;;
      esac
    done
    local sum=0
    for tid in "${!bg[@]}"; do sum=$(( sum + bg[$tid] )); done
    echo "$EPOCHREALTIME $total $(( total - sum ))"
    sleep 0.1
  done
}
sample_server "$server_pid" > "$work/cpu.samples" &
sampler_pid=$!
tck=$(getconf CLK_TCK)

# CPU seconds between two epoch times, interpolated from a sample file (default: the server's
# foreground threads; column 2 is a whole process).
cpu_between() { # START END [FILE] [COLUMN]
  awk -v a="$1" -v b="$2" -v tck="$tck" -v col="${4:-3}" '
    function at(t,   i) {
      if (t <= ts[1]) return tk[1];
      for (i = 2; i <= n; i++) if (ts[i] >= t)
        return tk[i-1] + (tk[i] - tk[i-1]) * (t - ts[i-1]) / (ts[i] - ts[i-1]);
      return tk[n];
    }
    { n++; ts[n] = $1; tk[n] = $col }
    END { printf "%.4f", (at(b) - at(a)) / tck }' "${3:-$work/cpu.samples}"
}

results=$work/results.tsv
printf 'round\tworkload\tvariant\tload1\tevents_per_s\tp50_us\tp99_us\tserver_cpu_us_per_event\tclient_cpu_us_per_event\n' > "$results"

run_one() { # round workload variant
  local round=$1 w=$2 variant=$3 mode clients batch api out t_end start end cpu cl load1 cmd pid
  IFS=: read -r mode clients batch api <<< "$w"
  api=${api:-append}
  local common=(--mode "$mode" --clients "$clients" --batch "$batch" --streams "$streams"
    --event-bytes "$event_bytes" --duration-s "$duration")
  out=$work/run-$round-${w//:/_}-$variant
  load1=$(cut -d' ' -f1 /proc/loadavg)
  case $variant in
    native) cmd=("$bin" bench --target "http://127.0.0.1:$port" "${common[@]}") ;;
    kurrent) cmd=(env "$load" --target "kurrentdb://127.0.0.1:$port?tls=false" --api "$api"
      "${common[@]}") ;;
    kurrent-nd) cmd=(env LD_PRELOAD="$shim" "$load" --target "kurrentdb://127.0.0.1:$port?tls=false"
      --api "$api" "${common[@]}") ;;
  esac
  # `env` execs, so $! is the load tool itself; its CPU is sampled like the server's.
  "${cmd[@]}" > "$out.txt" &
  pid=$!
  sample_cpu "$pid" > "$out.cpu" &
  if ! wait "$pid"; then
    echo "run failed: ${cmd[*]}" >&2
    cat "$out.txt" >&2
    exit 1
  fi
  t_end=$EPOCHREALTIME
  local json
  json=$(tail -n 1 "$out.txt")
  # The window: kurrent_load prints it; `statestore bench` ends within milliseconds of it
  # (its append check reads back a few requests), so it is the last elapsed_s before exit.
  if [[ $variant == native ]]; then
    end=$t_end
    start=$(echo "$end - $(jq -r .elapsed_s <<< "$json")" | bc -l)
  else
    start=$(echo "$(jq -r .window_start_us <<< "$json") / 1000000" | bc -l)
    end=$(echo "$(jq -r .window_end_us <<< "$json") / 1000000" | bc -l)
  fi
  sleep 0.25 # one more CPU sample after the window
  cpu=$(cpu_between "$start" "$end")
  cl=$(cpu_between "$start" "$end" "$out.cpu" 2)
  local eps p50 p99 events per_event client_per_event
  eps=$(jq -r .events_per_s <<< "$json")
  p50=$(jq -r .p50_us <<< "$json")
  p99=$(jq -r .p99_us <<< "$json")
  events=$(jq -r .events <<< "$json")
  per_event=$(awk -v c="$cpu" -v e="$events" 'BEGIN { printf "%.2f", (e > 0 ? c * 1e6 / e : 0) }')
  client_per_event=$(awk -v c="$cl" -v e="$events" 'BEGIN { printf "%.2f", (e > 0 ? c * 1e6 / e : 0) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$w" "$variant" "$load1" "$eps" \
    "$p50" "$p99" "$per_event" "$client_per_event" >> "$results"
  printf 'round %s %-13s %-10s load %-5s %8s ev/s  p50 %6s us  p99 %6s us  CPU/ev: server %6s us, client %6s us\n' \
    "$round" "$w" "$variant" "$load1" "$eps" "$p50" "$p99" "$per_event" "$client_per_event"
}

read -r -a vs <<< "$variants"
echo "$(nproc) CPUs; $(uptime)"
echo "server: $bin serve --data-dir $work/data --listen 127.0.0.1:$port (fsync always)" \
  "${SERVER_PRELOAD:+with LD_PRELOAD=$SERVER_PRELOAD}"
echo "each run: --streams $streams --event-bytes $event_bytes --duration-s $duration"
for round in $(seq "$rounds"); do
  for w in $workloads; do
    # Rotate the order of the variants every round, so drift in the machine's load hits each.
    n=${#vs[@]}
    for i in $(seq 0 $((n - 1))); do
      run_one "$round" "$w" "${vs[$(( (i + round - 1) % n ))]}"
    done
  done
done
echo "end: $(uptime)"

# Medians per workload and variant, and the ratios to native.
echo
echo "medians of $rounds rounds (latency: of the median run by throughput)"
printf '%-13s %-10s %8s %-24s %7s %7s %9s %9s %6s %6s\n' workload variant 'ev/s' runs p50_us p99_us \
  'srv_us/ev' 'cli_us/ev' cost 'srv/ev'
for w in $workloads; do
  native_eps='' native_cpu=''
  for v in "${vs[@]}"; do
    rows=$(awk -F'\t' -v w="$w" -v v="$v" '$2 == w && $3 == v' "$results" | sort -t$'\t' -k5,5n)
    n=$(wc -l <<< "$rows")
    mid=$(( (n + 1) / 2 ))
    med=$(sed -n "${mid}p" <<< "$rows")
    eps=$(cut -f5 <<< "$med")
    p50=$(cut -f6 <<< "$med")
    p99=$(cut -f7 <<< "$med")
    all=$(cut -f5 <<< "$rows" | paste -sd/)
    cpu=$(cut -f8 <<< "$rows" | sort -n | sed -n "${mid}p")
    ccpu=$(cut -f9 <<< "$rows" | sort -n | sed -n "${mid}p")
    if [[ $v == native ]]; then native_eps=$eps native_cpu=$cpu; fi
    cost=$(awk -v a="$native_eps" -v b="$eps" 'BEGIN { if (a != "" && b > 0) printf "%.2fx", a / b; else print "-" }')
    cpur=$(awk -v a="$native_cpu" -v b="$cpu" 'BEGIN { if (a != "" && a > 0) printf "%.2fx", b / a; else print "-" }')
    printf '%-13s %-10s %8s %-24s %7s %7s %9s %9s %6s %6s\n' "$w" "$v" "$eps" "$all" "$p50" "$p99" \
      "$cpu" "$ccpu" "$cost" "$cpur"
  done
done
cp "$results" "${RESULTS_COPY:-/dev/null}" 2>/dev/null || true
