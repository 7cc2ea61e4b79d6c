# --restart-policy exit-code: exit codes 1-127 are permanent (no restart,
# mlrun exits with that code); the other ranks' barrier returns
# MLRT_ERR_PEER_LOST instead of hanging; the summary shows the failing
# rank's last stderr lines.
. "$(dirname "$0")/lib.sh"

start=$(now_ms)
"$MLRUN" -np 3 --no-tag-output --restart-policy exit-code --max-restarts 3 \
	"$PROBE" exit 7 1 >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 7 ] || fail "mlrun exited $rc, want 7: $(cat "$TMP/err")"
grep -q 'rank 1 (host .*) exited with code 7' "$TMP/err" || fail "summary: $(cat "$TMP/err")"
grep -q 'permanent' "$TMP/err" || fail "summary does not say permanent: $(cat "$TMP/err")"
grep -q '  | probe: rank 1 failing on purpose with code 7' "$TMP/err" ||
	fail "summary lacks rank 1's stderr tail: $(cat "$TMP/err")"
grep -q 'restarting' "$TMP/err" && fail "restarted a permanent failure"
[ "$(grep -c 'barrier: peer lost' "$TMP/err")" -ge 1 ] ||
	fail "no survivor saw MLRT_ERR_PEER_LOST: $(cat "$TMP/err")"
took=$(($(now_ms) - start))
[ $took -lt 20000 ] || fail "took $took ms: something waited for a timeout"

# on-failure retries the same failure until restarts run out.
"$MLRUN" -np 2 --no-tag-output --restart-policy on-failure --max-restarts 2 \
	"$PROBE" exit 5 0 >"$TMP/out2" 2>"$TMP/err2"
rc=$?
[ $rc -eq 5 ] || fail "on-failure run exited $rc, want 5: $(cat "$TMP/err2")"
[ "$(grep -c 'gen=2 restarts=2' "$TMP/out2")" -eq 2 ] || fail "did not reach generation 2: $(cat "$TMP/out2")"
grep -q 'out of restarts' "$TMP/err2" || fail "summary: $(cat "$TMP/err2")"
echo "ok"
