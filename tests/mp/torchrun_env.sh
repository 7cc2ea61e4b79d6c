# torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
# MASTER_PORT) is enough: rank 0 serves the store on MASTER_PORT+1 and the
# ranks meet at a barrier.
. "$(dirname "$0")/lib.sh"

port=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768 up) that other tests bind
pids=()
for r in 0 1 2; do
	env -u MLRT_RANK RANK=$r WORLD_SIZE=3 LOCAL_RANK=$r LOCAL_WORLD_SIZE=3 \
		MASTER_ADDR=127.0.0.1 MASTER_PORT=$port MLRT_TIMEOUT_MS=20000 \
		"$PROBE" >"$TMP/out-$r" 2>"$TMP/err-$r" &
	pids+=($!)
done
for r in 0 1 2; do
	wait "${pids[$r]}" || fail "rank $r exited $?: $(cat "$TMP/err-$r")"
	grep -q "^probe rank=$r size=3 local_rank=$r local_size=3 gen=0 restarts=0 launcher=torchrun$" \
		"$TMP/out-$r" || fail "rank $r: $(cat "$TMP/out-$r")"
done
echo "ok"
