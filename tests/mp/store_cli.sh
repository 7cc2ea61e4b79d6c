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
probes_by_hand "$addr" byhand ".*launcher=mlrun$"
kill -TERM "$store_pid"
wait "$store_pid" || fail "store exited $? after SIGTERM"
echo "ok: store at $addr"
