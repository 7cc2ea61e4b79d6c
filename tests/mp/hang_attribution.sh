# A rank that never reaches a collective: the others' call times out after
# MLRT_TIMEOUT_MS with MLRT_ERR_TIMEOUT, the log names the rank that never
# arrived with its last completed collective, and the failed communicator
# refuses the next call with the same error.
. "$(dirname "$0")/lib.sh"

for transport in tcp shm; do
	start=$(now_ms)
	"$MLRUN" -np 3 --no-tag-output -- env MLRT_TRANSPORT=$transport MLRT_TIMEOUT_MS=1500 \
		"$PROBE" lag >"$TMP/out" 2>"$TMP/err" || fail "$transport: mlrun exited $?: $(cat "$TMP/err")"
	for r in 0 1; do
		grep -q "^lag: rank $r: timed out then timed out$" "$TMP/out" ||
			fail "$transport: rank $r: $(cat "$TMP/out" "$TMP/err")"
	done
	grep -q "\[mlrt 0\] error: comm: collective #5 (allreduce) timed out after 1500 ms waiting to .* rank [12]; never reached it: rank 2 (last completed #4 allreduce)" "$TMP/err" ||
		fail "$transport: rank 0's message does not name rank 2: $(cat "$TMP/err")"
	took=$(($(now_ms) - start))
	echo "ok: $transport ($took ms)"
done
