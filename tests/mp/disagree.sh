# Ranks that disagree on an allreduce's count (rank 0 passes one element
# more), or on whether it runs in place where that decides the algorithm
# (2 ranks over tcp): every rank's call fails at once, not after
# MLRT_TIMEOUT_MS, with
# MLRT_ERR_PROTOCOL where the mismatch was seen and MLRT_ERR_PEER_LOST or
# MLRT_ERR_PROTOCOL elsewhere, and the log says which ranks disagreed.
# Over tcp, over shm with 3 ranks (the direct allreduce) and with 2 ranks
# and a large message (the ring), and 2 ranks over tcp, rank 0 in place
# (the ring) and rank 1 not (the pair algorithm).
. "$(dirname "$0")/lib.sh"

while read -r transport np count mode; do
	what="$transport np $np count $count $mode"
	start=$(now_ms)
	timeout 60 "$MLRUN" -np "$np" --no-tag-output -- env MLRT_TRANSPORT="$transport" \
		MLRT_TIMEOUT_MS=60000 "$PROBE" disagree "$count" $mode >"$TMP/out" 2>"$TMP/err" ||
		fail "$what: mlrun exited $?: $(cat "$TMP/err")"
	took=$(($(now_ms) - start))
	for r in $(seq 0 $((np - 1))); do
		grep -Eq "^disagree: rank $r: (malformed message|peer lost)" "$TMP/out" ||
			fail "$what: rank $r: $(cat "$TMP/out" "$TMP/err")"
	done
	grep -q "^disagree: rank .*: malformed message" "$TMP/out" ||
		fail "$what: no rank saw the mismatch: $(cat "$TMP/out")"
	grep -Eq "disagree on the (collective|sequence)" "$TMP/err" ||
		fail "$what: the log does not say the ranks disagree: $(cat "$TMP/err")"
	[ "$took" -lt 20000 ] || fail "$what: took $took ms (the mismatch must not wait for the timeout)"
	echo "ok: $what ($took ms)"
done <<'CASES'
tcp 3 1000
shm 3 1000
shm 3 1000000
shm 2 1000000
tcp 2 100000 inplace
CASES
