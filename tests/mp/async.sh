# Nonblocking collectives and tensor fusion through mlrun, on tcp and shm.
. "$(dirname "$0")/lib.sh"

for transport in tcp shm; do
	for np in 2 3; do
		timeout 120 "$MLRUN" -np $np --no-tag-output -- env MLRT_TRANSPORT=$transport \
			MLRT_TIMEOUT_MS=30000 "$ASYNC_CHECK" >"$TMP/out" 2>"$TMP/err" ||
			fail "$transport np $np: exit $?: $(head -c 3000 "$TMP/err")"
		grep -q "async_check: $np ranks: ok" "$TMP/out" || fail "$(cat "$TMP/out")"
		echo "ok: $transport np $np"
	done
done
