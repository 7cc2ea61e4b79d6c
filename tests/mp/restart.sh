# SIGKILL of one worker under --restart-policy on-failure --max-restarts 1
# restarts the gang within 2 s as generation 1 with MLRT_RESTART_COUNT=1.
. "$(dirname "$0")/lib.sh"

"$MLRUN" -np 4 --no-tag-output --restart-policy on-failure --max-restarts 1 \
	"$PROBE" hang "$TMP" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 4 "$TMP/pid-g0-r*" 20 || fail "generation 0 did not start: $(cat "$TMP/err")"
victim=$(cat "$TMP/pid-g0-r2")
killed_at=$(now_ms)
kill -9 "$victim"
wait "$mlrun_pid"
rc=$?
[ $rc -eq 0 ] || fail "mlrun exited $rc: $(cat "$TMP/err")"
wait_for_files 4 "$TMP/start-g1-r*" 1 || fail "generation 1 incomplete"
latest=0
for f in "$TMP"/start-g1-r*; do
	t=$(cat "$f")
	[ "$t" -gt "$latest" ] && latest=$t
done
took=$((latest - killed_at))
echo "gang restarted $took ms after the SIGKILL"
[ $took -lt 2000 ] || fail "restart took $took ms (want < 2000)"
[ "$(grep -c 'gen=1 restarts=1 launcher=mlrun$' "$TMP/out")" -eq 4 ] ||
	fail "want 4 workers at generation 1, restart 1: $(cat "$TMP/out")"
grep -q 'rank 2 (host .*) was killed by signal 9 (SIGKILL)' "$TMP/err" ||
	fail "no root cause naming rank 2: $(cat "$TMP/err")"
echo "ok"
