# mlrun -H on 4 network-namespace hosts x 2 workers, agents started with
# --rsh 'ip netns exec {host}' ($1 = netns) or through real ssh to an sshd
# in each namespace ($1 = ssh): the collectives suite passes over tcp
# between hosts (shm within each), and the flagship trains to the accuracy
# it reaches on one host; parameter servers serve workers on every host.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns.sh"

netns_setup 4
port=$((20000 + RANDOM % 12000))
if [ "${1:-netns}" = ssh ]; then
	netns_sshd 4
	hosts=$NS_SSH_HOSTS
	rsh=$NS_SSH
else
	hosts=$(netns_hostlist 4 2)
	rsh='ip netns exec {host}'
fi
run() { # ARGS...: one job on the 4 hosts
	port=$((port + 1))
	timeout 300 "$MLRUN" -H "$hosts" --rsh "$rsh" \
		--rdzv-endpoint "$NS_HEAD:$port" --no-tag-output "$@"
}

run -- env MLRT_TIMEOUT_MS=60000 "$COLL_CHECK" >"$TMP/out" 2>"$TMP/err" ||
	fail "collectives on 4 hosts x 2: exit $?: $(head -c 3000 "$TMP/err")"
grep -q "coll_check: 8 ranks: all collectives match the reference" "$TMP/out" ||
	fail "collectives on 4 hosts x 2: $(cat "$TMP/out")"
echo "ok: every collective on 4 namespace hosts x 2"

# Ranks follow the host list, two per host.
run -- "$PROBE" >"$TMP/out" 2>"$TMP/err" || fail "probe: $(cat "$TMP/err")"
for r in 0 1 2 3 4 5 6 7; do
	grep -q "^probe rank=$r size=8 " "$TMP/out" || fail "no rank $r: $(cat "$TMP/out" "$TMP/err")"
done

# Parameter servers on the first host, workers on all four (SYNC Adam
# against each worker's local replay).
run --servers 2 -- "$PS_CHECK" sync adam >"$TMP/out" 2>"$TMP/err" ||
	fail "parameter servers across hosts: $(tail -5 "$TMP/err")"
[ "$(grep -c '^sync: worker [0-9]* ok$' "$TMP/out")" -eq 8 ] ||
	fail "parameter servers across hosts: $(cat "$TMP/out")"
echo "ok: 2 parameter servers and 8 workers on 4 hosts"

run -- "$MLP" --ckpt-dir "$TMP/ck4" >"$TMP/mlp4" 2>"$TMP/err" ||
	fail "mlp on 4 hosts: $(tail -5 "$TMP/err")"
timeout 300 "$MLRUN" -np 8 --no-tag-output "$MLP" --ckpt-dir "$TMP/ck1" >"$TMP/mlp1" 2>"$TMP/err" ||
	fail "mlp on one host: $(tail -5 "$TMP/err")"
a4=$(sed -n 's/^test accuracy: //p' "$TMP/mlp4")
a1=$(sed -n 's/^test accuracy: //p' "$TMP/mlp1")
awk -v a="$a4" -v b="$a1" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a >= 0.95 && d <= 0.005) }' ||
	fail "mlp: accuracy $a4 on 4 hosts x 2, $a1 on one host x 8"
echo "ok: mlp test accuracy $a4 on 4 namespace hosts x 2 ($a1 on one host x 8)"
