#!/usr/bin/env bash
# Parameter-server benchmark, in one run: the peers first (one loopback
# TCP stream, one Unix socket stream, bare ZeroMQ REQ/REP round trips of
# 64 B over tcp and ipc, all from ps_peer), then bench_ps through mlrun for each configuration (servers x
# workers, default 1x2 and 2x4) with the peers' figures passed in, then a
# summary of every ratio against its target.
#
#   push/pull 4 KiB     keys/s against ps-lite's quoted 5,500 req/s (>= 4x)
#   push/pull >= 1 MiB  GB/s against the TCP stream (>= 0.70x)
#   push+pull 1 float   median us against 2 ZeroMQ round trips (<= 1.20x)
#                       over ipc (what the servers are reached by on one
#                       machine), or tcp with MLRT_PS_TRANSPORT=tcp, timed
#                       by bench_ps in blocks alternating with its own
#                       (ps_peer echo), so that both see the same load
#
# Environment (meson's benchmark() sets the first three):
#   MLRUN, BENCH_PS, PS_PEER    mlrun, bench_ps, ps_peer
#                               (default: under build/ of this checkout)
#   BENCH_PS_CONFIGS="1x2 2x4"  SERVERSxWORKERS to run
#   BENCH_PS_SIZES=4K,1M,16M    value sizes (one key per value)
#   BENCH_PS_ROUNDS=5           rounds per size (median)
#   BENCH_PS_MIB=512            MiB per round, all workers together ...
#   BENCH_PS_MAX_OPS=16384      ... but at most this many requests
#   BENCH_PS_DEPTH=64           requests in flight per worker (async) ...
#   BENCH_PS_INFLIGHT_MIB=64    ... and at most this many MiB
#   BENCH_PS_LAT_ITERS=2000     push+pull round trips (median)
#   BENCH_PS_TCP_MIB=1024       TCP stream: MiB per round, in 1 MiB writes
#   BENCH_PS_TCP_ROUNDS=5
#   BENCH_PS_ZMQ_ITERS=10000    ZeroMQ round trips (median)
#   BENCH_PS_TRANSPORT=tcp      MLRT_TRANSPORT of the workers' barriers and
#                               allreduces: tcp sleeps in poll() where shm
#                               spins, which on a small machine would take
#                               the servers' CPU from them while a worker
#                               waits for the others
#   BENCH_PS_RUN_TIMEOUT=600    seconds allowed for one run
#
# Exit status: 0; 1 when a run fails (its stderr is printed) or prints no
# figures.  A ratio off its target is reported, not failed on.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${MESON_BUILD_ROOT:-$here/../../build}
MLRUN=${MLRUN:-$build/launcher/mlrun}
BENCH_PS=${BENCH_PS:-$build/tests/bench/bench_ps}
PS_PEER=${PS_PEER:-$build/tests/bench/ps_peer}
configs=${BENCH_PS_CONFIGS:-1x2 2x4}
run_timeout=${BENCH_PS_RUN_TIMEOUT:-600}
timeout_var=BENCH_PS_RUN_TIMEOUT
. "$(dirname "$0")/lib.sh"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

for prog in "$MLRUN" "$BENCH_PS" "$PS_PEER"; do
	[ -x "$prog" ] || fail "$prog not found (build with meson compile, or set MLRUN, BENCH_PS, PS_PEER)"
done
for cfg in $configs; do
	case $cfg in
	[1-9]*x[1-9]*) ;;
	*) fail "BENCH_PS_CONFIGS lists SERVERSxWORKERS, e.g. '1x2 2x4', not '$cfg'" ;;
	esac
done

TMP=$(mktemp -d /tmp/mlrt-bench-ps.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

echo "# parameter server: mlrt vs a loopback TCP stream and a bare ZeroMQ round trip;" \
	"configurations (servers x workers): $configs"
echo "# host $(hostname), $(nproc) CPUs; ps-lite figures quoted by the issue for this" \
	"machine: 1 MiB ~2.4 GB/s, 4 KiB ~5,500 req/s, small push+pull ~380 us (1 worker)"
start=$(date +%s)

run_one "tcp stream" "$TMP/tcp" '^tcp stream: [0-9]' \
	"$PS_PEER" tcp --mib "${BENCH_PS_TCP_MIB:-1024}" --rounds "${BENCH_PS_TCP_ROUNDS:-5}"
run_one "unix stream" "$TMP/unix" '^unix stream: [0-9]' \
	"$PS_PEER" unix --mib "${BENCH_PS_TCP_MIB:-1024}" --rounds "${BENCH_PS_TCP_ROUNDS:-5}"
run_one "zmq rtt" "$TMP/zmq" '^zmq rtt .*: [0-9]' \
	"$PS_PEER" zmq --bytes 64 --iters "${BENCH_PS_ZMQ_ITERS:-10000}"
run_one "zmq ipc rtt" "$TMP/zmq-ipc" '^zmq ipc rtt .*: [0-9]' \
	"$PS_PEER" zmq --bytes 64 --iters "${BENCH_PS_ZMQ_ITERS:-10000}" --over ipc
tcp_gbs=$(sed -n 's/^tcp stream: \([0-9.]*\) GB\/s.*/\1/p' "$TMP/tcp")
unix_gbs=$(sed -n 's/^unix stream: \([0-9.]*\) GB\/s.*/\1/p' "$TMP/unix")
# The latency floor: round trips over the transport the servers are
# reached by (ipc on one machine unless MLRT_PS_TRANSPORT=tcp).
if [ "${MLRT_PS_TRANSPORT:-}" = tcp ]; then
	zmq_over=tcp
	zmq_us=$(sed -n 's/^zmq rtt [0-9]* B: \([0-9.]*\) us.*/\1/p' "$TMP/zmq")
else
	zmq_over=ipc
	zmq_us=$(sed -n 's/^zmq ipc rtt [0-9]* B: \([0-9.]*\) us.*/\1/p' "$TMP/zmq-ipc")
fi
echo
echo "== peers =="
cat "$TMP/tcp" "$TMP/unix" "$TMP/zmq" "$TMP/zmq-ipc"

for cfg in $configs; do
	s=${cfg%x*} w=${cfg#*x}
	out=$TMP/ps-$cfg
	run_one "bench_ps $cfg" "$out" 'GB/s' \
		env MLRT_TRANSPORT="${BENCH_PS_TRANSPORT:-tcp}" \
		"$MLRUN" --servers "$s" -np "$w" --no-tag-output "$BENCH_PS" \
		--sizes "${BENCH_PS_SIZES:-4K,1M,16M}" --rounds "${BENCH_PS_ROUNDS:-5}" \
		--mib "${BENCH_PS_MIB:-512}" --max-ops "${BENCH_PS_MAX_OPS:-16384}" \
		--depth "${BENCH_PS_DEPTH:-64}" --inflight-mib "${BENCH_PS_INFLIGHT_MIB:-64}" \
		--lat-iters "${BENCH_PS_LAT_ITERS:-2000}" --tcp-gbs "$tcp_gbs" --unix-gbs "$unix_gbs" \
		--zmq-us "$zmq_us" --zmq-over "$zmq_over" --echo "$PS_PEER"
	echo
	echo "== $s server(s) x $w worker(s) =="
	cat "$out"
done

# Every line with "ratio R (target >= T)" or "(target <= T)", marked.
echo
echo "== summary ($(($(date +%s) - start)) s) =="
cat "$TMP"/ps-* | awk '
/ratio [0-9.]+ .*\(target [<>]= [0-9.]+\)/ {
	for (i = 1; i < NF; i++) {
		if ($i == "ratio")
			r = $(i + 1) + 0
		if ($i == "(target") {
			op = $(i + 1)
			t = $(i + 2) + 0
		}
	}
	ok = op == ">=" ? r >= t : r <= t
	print $0 (ok ? "  met" : "  MISSED")
}'
