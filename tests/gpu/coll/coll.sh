#!/usr/bin/env bash
# Collectives on device memory (suite gpu): dev_check under mlrun with
#   1 rank                     NCCL (the rank has its GPU to itself)
#   2 and 4 ranks on one GPU   staged (NCCL refuses a shared GPU), with
#                              the default chunk and with 64 KiB chunks
#   N ranks, N = GPUs >= 2     NCCL, each rank on a GPU of its own
# and checks from the log that the expected path ran.  Skips (77) without
# a GPU.  $1 = fault: instead, a rank killed during staged device
# allreduces must leave the others with MLRT_ERR_PEER_LOST within 5 s.
. "$MESON_SOURCE_ROOT/tests/mp/lib.sh"

ndev=$("$DEV_CHECK" --count 2>/dev/null) || fail "dev_check --count failed"
if [ "${ndev:-0}" -eq 0 ]; then
	echo "SKIP: no CUDA device on this machine (mlrt_device_count gives 0)" >&2
	exit 77
fi

# run NP PATH [ENV...]: dev_check with NP ranks must pass and must have
# taken PATH (nccl or staged).
run() {
	local np=$1 path=$2
	shift 2
	timeout 600 "$MLRUN" -np "$np" --no-tag-output -- env MLRT_LOG_LEVEL=debug \
		MLRT_TIMEOUT_MS=120000 "$@" "$DEV_CHECK" >"$TMP/out" 2>"$TMP/err" ||
		fail "np $np ($path $*): exit $?: $(head -c 4000 "$TMP/err")"
	grep -q "dev_check: $np ranks: all device collectives match the reference" "$TMP/out" ||
		fail "np $np ($path $*): $(cat "$TMP/out")"
	case $path in
	nccl) pat="device collectives through NCCL" ;;
	staged) pat="device collectives staged through host memory" ;;
	forced-staged) pat="comm: staged collectives on device [0-9]" ;;
	esac
	grep -q "$pat" "$TMP/err" || fail "np $np: did not take the $path path: $(head -c 2000 "$TMP/err")"
	echo "ok: np $np, $path $*"
}

if [ "${1:-}" = fault ]; then
	np=2
	mkdir "$TMP/spin"
	"$MLRUN" -np $np --no-tag-output --max-restarts 0 -- "$DEV_CHECK" spin "$TMP/spin" \
		>"$TMP/out" 2>"$TMP/err" &
	mlrun_pid=$!
	cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
	wait_for_files $np "$TMP/spin/pid-r*" 120 || fail "workers did not start: $(cat "$TMP/err")"
	sleep 1 # let the allreduces run
	killed_at=$(now_ms)
	kill -9 "$(cat "$TMP/spin/pid-r1")"
	wait "$mlrun_pid"
	rc=$?
	[ $rc -eq 137 ] || fail "mlrun exited $rc, want 137: $(cat "$TMP/err")"
	line=$(grep "^spin: rank 0 failed" "$TMP/out") || fail "rank 0 did not report: $(cat "$TMP/out" "$TMP/err")"
	case "$line" in
	*"peer lost"*) ;;
	*) fail "rank 0: $line (want peer lost)" ;;
	esac
	at=$(echo "$line" | sed 's/.* failed at \([0-9]*\).*/\1/')
	took=$((at - killed_at))
	echo "ok: rank 0: MLRT_ERR_PEER_LOST $took ms after the kill (staged device allreduce)"
	[ $took -lt 5000 ] || fail "rank 0 took $took ms to notice (want < 5000)"
	exit 0
fi

run 1 nccl
run 2 staged
run 4 staged
run 2 staged MLRT_STAGE_CHUNK_BYTES=65536
run 1 forced-staged MLRT_DEVICE_COLL=staged
if [ "$ndev" -ge 2 ]; then
	run "$ndev" nccl
else
	echo "note: one GPU here: NCCL with several ranks needs as many GPUs (not run)"
fi
