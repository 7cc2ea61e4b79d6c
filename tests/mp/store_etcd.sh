# The store client's etcd backend against a real etcd on loopback: every
# case of the store's unit test (test_store with MLRT_TEST_STORE), two
# workers meeting through MLRT_STORE=etcd://..., a leased key that vanishes
# after its TTL unless renewed, an HTTP server that is not etcd giving
# MLRT_ERR_PROTOCOL, and an etcd that hangs, dies during a wait or is gone,
# each giving MLRT_ERR_UNAVAILABLE in time, not a hang.
# Skips (exit 77) without etcd (Debian: etcd-server) or without the
# backend (-Detcd).
. "$(dirname "$0")/lib.sh"

command -v etcd >/dev/null || { echo "skip: etcd is not installed (Debian: etcd-server)" >&2; exit 77; }
grep -q '^#define HAVE_ETCD 1' "$MESON_BUILD_ROOT/mlrt_config.h" ||
	{ echo "skip: mlrt was built without the etcd store backend (-Detcd)" >&2; exit 77; }
TEST_STORE="$MESON_BUILD_ROOT/tests/test_store"
[ -x "$TEST_STORE" ] || fail "no $TEST_STORE: build the unit tests"
[ -x "$STORE_OP" ] || fail "no store_op at '$STORE_OP'"

UNAVAILABLE=10 NOT_FOUND=5 PROTOCOL=8

. "$(dirname "$0")/etcd.sh"

# run_op EXPECTED_STATUS ARGS...: store_op ARGS, which must exit with
# EXPECTED_STATUS; its stdout is in $out, its time in $took_ms.
run_op() {
	local want=$1 t0
	shift
	t0=$(now_ms)
	rc=0
	out=$("$STORE_OP" "$@" 2>"$TMP/op.err") || rc=$?
	took_ms=$(($(now_ms) - t0))
	[ "$rc" -eq "$want" ] || fail "store_op $* exited $rc, not $want: $(cat "$TMP/op.err")"
}

start_etcd
echo "etcd $(etcd --version | head -1 | sed 's/.*: //') at $ADDR"

# 1. Every case of the unit test that is not about mlrt's own server.
MLRT_TEST_STORE="$ADDR" "$TEST_STORE" >"$TMP/unit.log" 2>&1 ||
	fail "test_store against $ADDR: $(grep -E 'FAIL|ERROR|error' "$TMP/unit.log" | head -20)"
grep -q 'PASSED.*12 test' "$TMP/unit.log" || fail "test_store did not run its cases: $(tail -20 "$TMP/unit.log")"
grep 'wait returned' "$TMP/unit.log" | sed 's/^/unit: /'

# 2. Two workers started by hand meet through etcd, as with `mlrun store`.
probes_by_hand "$ADDR" etcd ""

# 3. Leases (through the http:// form of the address).  etcd's TTLs are
# whole seconds, 2 s at least: a 1000 ms lease lives 2 s.  Renewed, it
# outlives that; left alone, its key goes within a few seconds, and the
# lease cannot be renewed any more.
HTTP="http://${ADDR#etcd://}"
run_op 0 "$HTTP" lease lease/kept yes 1000
kept=$out
run_op 0 "$HTTP" lease lease/left yes 1000
left=$out
t_left=$(now_ms)
run_op 0 "$HTTP" get lease/left
[ "$out" = yes ] || fail "lease/left holds '$out'"
# Renew one for 4 s while watching the other go.
gone_ms=
renew_end=$((t_left + 4000))
while [ "$(now_ms)" -lt $renew_end ] || [ -z "$gone_ms" ]; do
	[ "$(now_ms)" -lt $renew_end ] && run_op 0 "$HTTP" renew "$kept"
	if [ -z "$gone_ms" ]; then
		rc=0
		"$STORE_OP" "$HTTP" get lease/left >/dev/null 2>"$TMP/op.err" || rc=$?
		[ $rc -eq 0 ] || [ $rc -eq $NOT_FOUND ] || fail "get lease/left exited $rc: $(cat "$TMP/op.err")"
		[ $rc -eq $NOT_FOUND ] && gone_ms=$(($(now_ms) - t_left))
	fi
	[ $(($(now_ms) - t_left)) -lt 8000 ] || fail "lease/left still there 8 s after its lease began"
	sleep 0.1
done
[ "$gone_ms" -ge 900 ] || fail "lease/left went after $gone_ms ms, before its 1 s TTL"
run_op 0 "$HTTP" get lease/kept
echo "a key under a 1000 ms lease went after $gone_ms ms; the renewed one is still there"
run_op $NOT_FOUND "$HTTP" renew "$left"

# 4. An HTTP server that is not etcd's client API: PROTOCOL, saying so.
run_op $PROTOCOL "$PEER_ADDR" get x
grep -q "is it the client URL" "$TMP/op.err" || fail "no hint for a wrong URL: $(cat "$TMP/op.err")"

# 5. A hung etcd (stopped): calls fail with UNAVAILABLE after the request
# timeout, naming the endpoint.
run_op 0 "$ADDR" set alive yes
kill -STOP "$etcd_pid"
MLRT_STORE_TIMEOUT_MS=1000 run_op $UNAVAILABLE "$ADDR" get alive
kill -CONT "$etcd_pid"
[ "$took_ms" -ge 900 ] && [ "$took_ms" -lt 4000 ] || fail "a hung etcd failed a get after $took_ms ms"
grep -q "etcd at $ADDR" "$TMP/op.err" || fail "the message does not name $ADDR: $(cat "$TMP/op.err")"
echo "hung etcd: UNAVAILABLE after $took_ms ms"
run_op 0 "$ADDR" get alive

# 6. etcd killed during a long wait: the waiter notices within the request
# timeout, not at the end of its wait.
MLRT_STORE_TIMEOUT_MS=1000 "$STORE_OP" "$ADDR" wait never 60000 2>"$TMP/wait.err" &
waiter=$!
cleanup_hooks+=("kill -9 $waiter 2>/dev/null")
sleep 0.5
pid_alive $waiter || fail "the waiter ended early: $(cat "$TMP/wait.err")"
kill -9 "$etcd_pid"
wait "$etcd_pid" 2>/dev/null
etcd_pid=
t0=$(now_ms)
rc=0
wait $waiter || rc=$?
took_ms=$(($(now_ms) - t0))
[ $rc -eq $UNAVAILABLE ] || fail "the waiter exited $rc, not $UNAVAILABLE: $(cat "$TMP/wait.err")"
[ $took_ms -lt 4000 ] || fail "the waiter noticed the dead etcd after $took_ms ms"
echo "etcd killed during a wait: UNAVAILABLE $took_ms ms later"

# 7. No etcd at all: UNAVAILABLE after the request timeout, naming it.
MLRT_STORE_TIMEOUT_MS=500 run_op $UNAVAILABLE "$ADDR" set k v
[ "$took_ms" -ge 450 ] && [ "$took_ms" -lt 3000 ] || fail "a dead etcd failed a set after $took_ms ms"
grep -q "etcd at $ADDR" "$TMP/op.err" || fail "the message does not name $ADDR: $(cat "$TMP/op.err")"
echo "ok"
