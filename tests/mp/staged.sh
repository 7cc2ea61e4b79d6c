# The staged path of the device collectives (comm/staged.c), without a
# GPU: MLRT_DEVICE_COLL=staged-host sends host buffers through the same
# chunked, pipelined code with memcpy copies (deferred to the latest
# moment the pipeline allows, so that a missing wait gives wrong bits).
#   1. coll_check (every collective, dtype, op, edge counts, in place,
#      bitwise agreement) with 2, 3 and 4 ranks, with 4160-byte chunks
#      (many chunks per collective; not a multiple of the 256-byte period
#      of coll_check's broadcast data, so that a chunk written to another
#      chunk's place shows) and with the default chunk;
#   2. async_check (nonblocking collectives, groups, fusion) with 2 ranks;
#   3. a rank killed during staged allreduces: the others get
#      MLRT_ERR_PEER_LOST within 2 s.
. "$(dirname "$0")/lib.sh"

for chunk in 4160 default; do
	extra=()
	[ "$chunk" = default ] || extra=(MLRT_STAGE_CHUNK_BYTES="$chunk")
	for np in 2 3 4; do
		timeout 300 "$MLRUN" -np "$np" --no-tag-output -- env MLRT_DEVICE_COLL=staged-host \
			"${extra[@]}" MLRT_TIMEOUT_MS=60000 MLRT_LOG_LEVEL=debug "$COLL_CHECK" \
			>"$TMP/out" 2>"$TMP/err" ||
			fail "np $np chunk $chunk: exit $?: $(grep -v debug: "$TMP/err" | head -c 3000)"
		grep -q "coll_check: $np ranks: all collectives match the reference" "$TMP/out" ||
			fail "np $np chunk $chunk: $(cat "$TMP/out")"
		# The staged path really ran, on every rank.
		n=$(grep -c "comm: staged collectives on host memory: .* memcpy copies" "$TMP/err")
		[ "$n" -eq "$np" ] || fail "np $np: staged path set up on $n ranks, want $np: $(head -c 2000 "$TMP/err")"
		echo "ok: coll_check np $np, staged-host, chunk $chunk"
	done
done

timeout 120 "$MLRUN" -np 2 --no-tag-output -- env MLRT_DEVICE_COLL=staged-host \
	MLRT_STAGE_CHUNK_BYTES=4096 MLRT_TIMEOUT_MS=30000 "$ASYNC_CHECK" >"$TMP/out" 2>"$TMP/err" ||
	fail "async_check: exit $?: $(head -c 3000 "$TMP/err")"
grep -q "async_check: 2 ranks: ok" "$TMP/out" || fail "async_check: $(cat "$TMP/out")"
echo "ok: async_check np 2, staged-host"

np=3
mkdir "$TMP/spin"
"$MLRUN" -np $np --no-tag-output --max-restarts 0 -- env MLRT_DEVICE_COLL=staged-host \
	MLRT_STAGE_CHUNK_BYTES=65536 "$PROBE" spin "$TMP/spin" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files $np "$TMP/spin/pid-g0-r*" 30 || fail "workers did not start: $(cat "$TMP/err")"
sleep 0.5 # let the allreduces run
killed_at=$(now_ms)
kill -9 "$(cat "$TMP/spin/pid-g0-r1")"
wait "$mlrun_pid"
rc=$?
[ $rc -eq 137 ] || fail "mlrun exited $rc, want 137: $(cat "$TMP/err")"
for r in 0 2; do
	line=$(grep "^spin: rank $r failed" "$TMP/out") || fail "rank $r did not report: $(cat "$TMP/out" "$TMP/err")"
	case "$line" in
	*"peer lost"*) ;;
	*) fail "rank $r: $line (want peer lost)" ;;
	esac
	at=$(echo "$line" | sed 's/.* failed at \([0-9]*\) .*/\1/')
	took=$((at - killed_at))
	echo "ok: rank $r: MLRT_ERR_PEER_LOST $took ms after the kill (staged-host)"
	[ $took -lt 2000 ] || fail "rank $r took $took ms to notice (want < 2000)"
done
