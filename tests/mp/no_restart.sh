# With --max-restarts 0 a SIGKILLed worker ends the job: mlrun exits
# non-zero (128+9) and its summary names the rank and the signal.
. "$(dirname "$0")/lib.sh"

"$MLRUN" -np 3 --restart-policy on-failure --max-restarts 0 --no-tag-output \
	"$PROBE" hang "$TMP" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 3 "$TMP/pid-g0-r*" 20 || fail "workers did not start: $(cat "$TMP/err")"
pids=$(cat "$TMP"/pid-g0-r*)
kill -9 "$(cat "$TMP/pid-g0-r1")"
wait "$mlrun_pid"
rc=$?
[ $rc -eq 137 ] || fail "mlrun exited $rc, want 137: $(cat "$TMP/err")"
grep -q 'rank 1 (host .*) was killed by signal 9 (SIGKILL)' "$TMP/err" ||
	fail "summary does not name rank 1 and SIGKILL: $(cat "$TMP/err")"
grep -q 'no restarts allowed' "$TMP/err" || fail "summary does not say why: $(cat "$TMP/err")"
for p in $pids; do pid_alive "$p" && fail "worker $p survived mlrun"; done
[ -e "$TMP/pid-g1-r0" ] && fail "the gang was restarted"
echo "ok"
