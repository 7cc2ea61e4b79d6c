# Every collective, dtype and op against a reference on each rank, with
# 2, 3, 4, 5 and 8 ranks, over the transport named by $1 (tcp or shm), and
# optional extra environment ($2..., e.g. MLRT_CHUNK_BYTES=4096).
. "$(dirname "$0")/lib.sh"

transport=$1
shift
for np in 2 3 4 5 8; do
	timeout 300 "$MLRUN" -np "$np" --no-tag-output -- env MLRT_TRANSPORT="$transport" "$@" \
		MLRT_TIMEOUT_MS=60000 "$COLL_CHECK" >"$TMP/out" 2>"$TMP/err" ||
		fail "np $np over $transport ($*): exit $?: $(head -c 3000 "$TMP/err")"
	grep -q "coll_check: $np ranks: all collectives match the reference" "$TMP/out" ||
		fail "np $np: $(cat "$TMP/out")"
	echo "ok: np $np over $transport $*"
done
