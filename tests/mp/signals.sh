# SIGTERM to mlrun reaches every worker and no worker outlives mlrun; a
# SIGKILLed mlrun takes its workers with it (PR_SET_PDEATHSIG).
. "$(dirname "$0")/lib.sh"

"$MLRUN" -np 3 --grace-period 2 "$PROBE" hang "$TMP" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 3 "$TMP/pid-g0-r*" 20 || fail "workers did not start: $(cat "$TMP/err")"
pids=$(cat "$TMP"/pid-g0-r*)
kill -TERM "$mlrun_pid"
wait "$mlrun_pid"
rc=$?
[ $rc -eq 143 ] || fail "mlrun exited $rc after SIGTERM, want 143: $(cat "$TMP/err")"
for p in $pids; do pid_alive "$p" && fail "worker $p survived SIGTERM to mlrun"; done
grep -q 'interrupted by signal 15' "$TMP/err" || fail "no interrupt message: $(cat "$TMP/err")"

rm -f "$TMP"/pid-*
"$MLRUN" -np 2 "$PROBE" hang "$TMP" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
wait_for_files 2 "$TMP/pid-g0-r*" 20 || fail "workers did not start (2nd run)"
pids=$(cat "$TMP"/pid-g0-r*)
kill -KILL "$mlrun_pid"
wait "$mlrun_pid" 2>/dev/null
deadline=$((SECONDS + 5))
for p in $pids; do
	while pid_alive "$p"; do
		[ $SECONDS -ge $deadline ] && fail "worker $p orphaned by a SIGKILLed mlrun"
		sleep 0.05
	done
done
echo "ok"
