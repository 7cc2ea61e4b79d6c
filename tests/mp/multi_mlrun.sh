# torchrun style: the same mlrun started once per "host" (two here, named
# with MLRT_HOSTNAME) with --rdzv-endpoint forms one gang: ranks by host,
# MASTER_ADDR/MASTER_PORT the same everywhere,
# the flagship trains across both to the accuracy it reaches on one host,
# and a killed worker restarts the gang on both hosts.
. "$(dirname "$0")/lib.sh"

port=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768 up) that other tests bind
both() { # ARGS...: run mlrun on hostA (in the background) and hostB
	MLRT_HOSTNAME=hostA "$MLRUN" --nnodes 2 -np 2 --rdzv-endpoint 127.0.0.1:$port \
		--no-tag-output "$@" >"$TMP/a.out" 2>"$TMP/a.err" &
	local a=$!
	cleanup_hooks+=("kill -9 $a 2>/dev/null")
	MLRT_HOSTNAME=hostB "$MLRUN" --nnodes 2 -np 2 --rdzv-endpoint 127.0.0.1:$port \
		--no-tag-output "$@" >"$TMP/b.out" 2>"$TMP/b.err"
	rc_b=$?
	wait $a
	rc_a=$?
	port=$((port + 1))
}

both "$PROBE"
[ $rc_a -eq 0 ] && [ $rc_b -eq 0 ] || fail "probe: $(cat "$TMP/a.err" "$TMP/b.err")"
for r in 0 1; do grep -q "^probe rank=$r size=4 " "$TMP/a.out" || fail "hostA lacks rank $r"; done
for r in 2 3; do grep -q "^probe rank=$r size=4 " "$TMP/b.out" || fail "hostB lacks rank $r"; done
echo "2 hosts x 2: ranks 0-1 on hostA, 2-3 on hostB"

# PyTorch's rendezvous variables agree across hosts: rank 0's host and port.
both sh -c 'echo "master=$MASTER_ADDR:$MASTER_PORT"'
[ $rc_a -eq 0 ] && [ $rc_b -eq 0 ] || fail "sh: $(cat "$TMP/a.err" "$TMP/b.err")"
[ "$(cat "$TMP/a.out" "$TMP/b.out" | grep -c '^master=')" -eq 4 ] &&
	[ "$(cat "$TMP/a.out" "$TMP/b.out" | sort -u | wc -l)" -eq 1 ] ||
	fail "MASTER_ADDR/PORT differ between hosts: $(cat "$TMP/a.out" "$TMP/b.out")"
echo "MASTER_ADDR:MASTER_PORT the same on both hosts: $(head -1 "$TMP/a.out")"

both "$MLP" --ckpt-dir "$TMP/ck"
[ $rc_a -eq 0 ] && [ $rc_b -eq 0 ] || fail "mlp: $(tail -5 "$TMP/a.err" "$TMP/b.err")"
acc=$(sed -n 's/^test accuracy: //p' "$TMP/a.out")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.95) }' || fail "mlp across 2 hosts: accuracy '$acc'"
echo "mlp across 2 hosts x 2: test accuracy $acc"

# Kill a worker of hostB: both hosts restart the gang as generation 1.
MLRT_HOSTNAME=hostA "$MLRUN" --nnodes 2 -np 2 --rdzv-endpoint 127.0.0.1:$port --max-restarts 1 \
	--no-tag-output "$PROBE" hang "$TMP" >"$TMP/a.out" 2>"$TMP/a.err" &
a=$!
MLRT_HOSTNAME=hostB "$MLRUN" --nnodes 2 -np 2 --rdzv-endpoint 127.0.0.1:$port --max-restarts 1 \
	--no-tag-output "$PROBE" hang "$TMP" >"$TMP/b.out" 2>"$TMP/b.err" &
b=$!
cleanup_hooks+=("kill -9 $a $b 2>/dev/null")
wait_for_files 4 "$TMP/pid-g0-r*" 20 || fail "generation 0 did not start: $(cat "$TMP/a.err" "$TMP/b.err")"
kill -9 "$(cat "$TMP/pid-g0-r3")"
wait $a || fail "hostA's mlrun failed: $(cat "$TMP/a.err")"
wait $b || fail "hostB's mlrun failed: $(cat "$TMP/b.err")"
grep -q 'restarting the gang as generation 1' "$TMP/a.err" &&
	grep -q 'restarting the gang as generation 1' "$TMP/b.err" ||
	fail "both hosts must restart: $(cat "$TMP/a.err" "$TMP/b.err")"
[ "$(cat "$TMP/a.out" "$TMP/b.out" | grep -c 'gen=1 restarts=1')" -eq 4 ] ||
	fail "want 4 workers in generation 1: $(cat "$TMP/a.out" "$TMP/b.out")"
echo "a worker killed on hostB: both hosts restarted the gang as generation 1"
