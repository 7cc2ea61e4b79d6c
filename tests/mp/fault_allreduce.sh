# SIGKILL of one rank in the middle of large allreduces: every survivor's
# allreduce returns MLRT_ERR_PEER_LOST within 2 s, and mlrun reports the
# failure naming the rank and the signal.  $1: transport (tcp or shm);
# $2...: more environment (e.g. MLRT_ALGO=ring).
. "$(dirname "$0")/lib.sh"

transport=$1
shift
np=4
"$MLRUN" -np $np --no-tag-output --max-restarts 0 -- env MLRT_TRANSPORT="$transport" "$@" \
	"$PROBE" spin "$TMP" >"$TMP/out" 2>"$TMP/err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files $np "$TMP/pid-g0-r*" 30 || fail "workers did not start: $(cat "$TMP/err")"
sleep 0.5 # let the allreduces run
killed_at=$(now_ms)
kill -9 "$(cat "$TMP/pid-g0-r2")"
wait "$mlrun_pid"
rc=$?
[ $rc -eq 137 ] || fail "mlrun exited $rc, want 137: $(cat "$TMP/err")"
grep -q 'rank 2 (host .*) was killed by signal 9 (SIGKILL)' "$TMP/err" ||
	fail "mlrun did not report rank 2's SIGKILL: $(cat "$TMP/err")"
for r in 0 1 3; do
	line=$(grep "^spin: rank $r failed" "$TMP/out") || fail "rank $r did not report: $(cat "$TMP/out" "$TMP/err")"
	case "$line" in
	*"peer lost"*) ;;
	*) fail "rank $r: $line (want peer lost)" ;;
	esac
	at=$(echo "$line" | sed 's/.* failed at \([0-9]*\) .*/\1/')
	took=$((at - killed_at))
	echo "rank $r: MLRT_ERR_PEER_LOST $took ms after the kill"
	[ $took -lt 2000 ] || fail "rank $r took $took ms to notice (want < 2000)"
done
echo "ok"
