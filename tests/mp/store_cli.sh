# `mlrun store` serves a standalone store: workers started by hand with
# MLRT_STORE pointing at it meet at a barrier; SIGTERM stops it cleanly.
. "$(dirname "$0")/lib.sh"

"$MLRUN" store --host 127.0.0.1 --port 0 >"$TMP/addr" 2>"$TMP/store.err" &
store_pid=$!
cleanup_hooks+=("kill -9 $store_pid 2>/dev/null")
deadline=$((SECONDS + 10))
until grep -q '^tcp://127.0.0.1:[0-9]*$' "$TMP/addr"; do
	[ $SECONDS -ge $deadline ] && fail "no address printed: $(cat "$TMP/addr" "$TMP/store.err")"
	sleep 0.05
done
addr=$(cat "$TMP/addr")
pids=()
for r in 0 1; do
	env MLRT_RANK=$r MLRT_WORLD_SIZE=2 MLRT_STORE="$addr" MLRT_JOB_ID=byhand MLRT_TIMEOUT_MS=20000 \
		"$PROBE" >"$TMP/out-$r" 2>"$TMP/err-$r" &
	pids+=($!)
done
for r in 0 1; do
	wait "${pids[$r]}" || fail "rank $r exited $?: $(cat "$TMP/err-$r")"
	grep -q "^probe rank=$r size=2 .*launcher=mlrun$" "$TMP/out-$r" || fail "rank $r: $(cat "$TMP/out-$r")"
done
kill -TERM "$store_pid"
wait "$store_pid" || fail "store exited $? after SIGTERM"
echo "ok: store at $addr"
