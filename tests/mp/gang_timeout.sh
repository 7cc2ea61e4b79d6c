# A gang that needs more agents than join fails at its deadline with a
# message that says how many joined, how many were needed and who is
# missing, instead of hanging.
. "$(dirname "$0")/lib.sh"

start=$(now_ms)
timeout 30 "$MLRUN" --nnodes 3 --rdzv-timeout 1.5 -np 1 "$PROBE" >"$TMP/out" 2>"$TMP/err"
rc=$?
took=$(($(now_ms) - start))
[ $rc -ne 124 ] || fail "mlrun hung"
[ $rc -eq 1 ] || fail "mlrun exited $rc, want 1: $(cat "$TMP/err")"
grep -q "failed after 1.5 s: 1 of 3 needed participants joined (joined: $(hostname); missing: 2 more, not named in advance)" "$TMP/err" ||
	fail "message: $(cat "$TMP/err")"
[ $took -ge 1500 ] && [ $took -lt 10000 ] || fail "failed after $took ms, want about 1500"
[ -s "$TMP/out" ] && fail "a worker ran although the gang never formed"
echo "ok: failed after $took ms"
