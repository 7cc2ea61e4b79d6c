#!/usr/bin/env bash
# Collectives on device memory (suite gpu): dev_check under mlrun with
#   1 rank                     NCCL (the rank has its GPU to itself)
#   2 and 4 ranks on one GPU   staged (NCCL refuses a shared GPU), with
#                              the default chunk and with 64 KiB chunks
#   N ranks, N = GPUs >= 2     NCCL, each rank on a GPU of its own
# and checks from the log that the expected path ran.  Skips (77) without
# a GPU.  $1 = fault: instead, a rank killed during staged device
# allreduces must leave the others with MLRT_ERR_PEER_LOST within 5 s;
# fault-nccl: the same through NCCL, two ranks on two GPUs (skips with
# fewer), and against the fake also a rank that stops (SIGSTOP), which
# must give the other MLRT_ERR_TIMEOUT, not a hang.
#
# Against the fake CUDA and NCCL (tests/gpu/fake, preloaded by meson;
# FAKE_CUDA_DEVICES=1): also NCCL with FAKE_NCCL_GPUS ranks on as many
# fake GPUs, a device copy that faults on one rank, and NCCL forced on a
# shared GPU, which must fail with NCCL's reason, not hang.
. "$MESON_SOURCE_ROOT/tests/mp/lib.sh"
export FAKE_NCCL_DIR=$TMP # the fake NCCL's files, if it is preloaded

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
	! grep "did not finalize" "$TMP/err" || fail "np $np: a healthy NCCL communicator was aborted at close"
	echo "ok: np $np, $path $*"
}

# fault PATH [ENV...]: two ranks spin on device allreduces; rank 1 is
# killed; rank 0 must report MLRT_ERR_PEER_LOST within 5 s.  With
# STOP=1 in ENV, rank 1 is stopped (SIGSTOP) instead: alive but silent,
# it must cost rank 0 MLRT_ERR_TIMEOUT after MLRT_TIMEOUT_MS (3 s here).
fault() {
	local path=$1 np=2 stop=0 want="peer lost" within=5000 sig=KILL rc_want=137
	shift
	[[ " $* " == *" STOP=1 "* ]] && stop=1 want="timed out" within=6000 sig=STOP rc_want=3
	mkdir -p "$TMP/spin"
	rm -f "$TMP"/spin/*
	env "$@" "$MLRUN" -np $np --no-tag-output --max-restarts 0 -- env MLRT_LOG_LEVEL=debug \
		MLRT_TIMEOUT_MS=$((stop ? 3000 : 120000)) "$DEV_CHECK" spin "$TMP/spin" \
		>"$TMP/out" 2>"$TMP/err" &
	mlrun_pid=$!
	cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
	wait_for_files $np "$TMP/spin/pid-r*" 120 || fail "workers did not start: $(cat "$TMP/err")"
	cleanup_hooks+=("kill -9 $(cat "$TMP/spin/pid-r1") 2>/dev/null")
	# Rank 0's choice, as soon as mlrun has passed its log line on.
	took_path=
	for _ in $(seq 50); do
		grep -q "device collectives through NCCL" "$TMP/err" && took_path=nccl
		grep -q "device collectives staged through host memory" "$TMP/err" && took_path=staged
		[ -z "$took_path" ] || break
		sleep 0.1
	done
	[ "$took_path" = "$path" ] || fail "took the ${took_path:-unknown} path, want $path: $(head -c 2000 "$TMP/err")"
	sleep 1 # let the allreduces run
	killed_at=$(now_ms)
	kill -$sig "$(cat "$TMP/spin/pid-r1")"
	wait "$mlrun_pid"
	rc=$?
	[ $rc -eq $rc_want ] || fail "mlrun exited $rc, want $rc_want: $(cat "$TMP/err")"
	line=$(grep "^spin: rank 0 failed" "$TMP/out") || fail "rank 0 did not report: $(cat "$TMP/out" "$TMP/err")"
	case "$line" in
	*"$want"*) ;;
	*) fail "rank 0: $line (want $want): $(tail -c 2000 "$TMP/err")" ;;
	esac
	at=$(echo "$line" | sed 's/.* failed at \([0-9]*\).*/\1/')
	took=$((at - killed_at))
	echo "ok: rank 0: '$want' $took ms after SIG$sig to rank 1 ($path device allreduce $*)"
	[ $took -lt $within ] || fail "rank 0 took $took ms to notice (want < $within)"
}

case "${1:-}" in
fault)
	fault staged
	exit 0
	;;
fault-nccl)
	if [ -n "${FAKE_NCCL_GPUS:-}" ]; then
		fault nccl FAKE_CUDA_DEVICES=2 FAKE_NCCL_PEER_DEATH=hang
		fault nccl FAKE_CUDA_DEVICES=2 FAKE_NCCL_PEER_DEATH=remote
		fault nccl FAKE_CUDA_DEVICES=2 STOP=1
	elif [ "$ndev" -ge 2 ]; then
		fault nccl
	else
		echo "SKIP: NCCL with two ranks needs two GPUs; this machine has $ndev" >&2
		exit 77
	fi
	exit 0
	;;
esac

run 1 nccl
run 2 staged
run 4 staged
run 2 staged MLRT_STAGE_CHUNK_BYTES=65536
run 1 forced-staged MLRT_DEVICE_COLL=staged
if [ "$ndev" -ge 2 ]; then
	run "$ndev" nccl
elif [ -n "${FAKE_NCCL_GPUS:-}" ]; then
	FAKE_CUDA_DEVICES=$FAKE_NCCL_GPUS run "$FAKE_NCCL_GPUS" nccl
else
	echo "note: one GPU here: NCCL with several ranks needs as many GPUs (not run)"
fi

# Fake only: a device copy that faults on rank 1 in the middle of the
# staged collectives fails them on both ranks at once, naming the fault
# there and the lost peer here.
if [ -n "${FAKE_NCCL_GPUS:-}" ]; then
	timeout 120 "$MLRUN" -np 2 --no-tag-output --max-restarts 0 -- env FAKE_CUDA_FAIL_COPY=40 \
		"$DEV_CHECK" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a faulted copy: exit $rc: $(head -c 3000 "$TMP/err")"
	grep -q "^\[mlrt 1\] error: comm: staged allreduce on device 0: cudaMemcpyAsync failed: .*cudaErrorIllegalAddress" \
		"$TMP/err" || fail "a faulted copy: rank 1 did not say so: $(head -c 3000 "$TMP/err")"
	grep -q "^rank 0: FAIL: allreduce .*: peer lost" "$TMP/err" ||
		fail "a faulted copy: rank 0 not told: $(head -c 3000 "$TMP/err")"
	echo "ok: a device copy faulting on rank 1 fails the collective there, and rank 0 learns the peer is lost"
fi

# NCCL forced on a shared GPU: refused at init with NCCL's reason.
if [ -n "${FAKE_NCCL_GPUS:-}" ] || [ "$ndev" -eq 1 ]; then
	timeout 120 "$MLRUN" -np 2 --no-tag-output --max-restarts 0 -- env MLRT_DEVICE_COLL=nccl \
		"$DEV_CHECK" >"$TMP/out" 2>"$TMP/err"
	rc=$?
	[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "NCCL forced on one GPU: exit $rc: $(head -c 3000 "$TMP/err")"
	want="comm: NCCL init on device 0 (rank [01] of 2): "
	[ -z "${FAKE_NCCL_GPUS:-}" ] || want="$want.*Duplicate GPU"
	grep -q "$want" "$TMP/err" || fail "NCCL forced on one GPU: no '$want': $(head -c 3000 "$TMP/err")"
	echo "ok: NCCL forced with 2 ranks on one GPU fails at init, saying why"
fi
