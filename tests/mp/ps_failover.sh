# SIGKILL a parameter server mid-training (3 servers, replication on, SYNC
# Adam): training goes on without a restart; mlrun starts the server again
# and it rejoins as the backup of its ranges, brought up to date; then its
# former backup is killed too and the rejoined server takes over.  The
# final parameters are bitwise those of an undisturbed run (no acknowledged
# push lost, none applied twice).  Prints the time from each kill to the
# first request the backup served.  With --ps-replicas 0 the same kill ends
# the job with a message naming the server, and under a restart policy the
# servers reload their keys from their shard checkpoints (--ps-ckpt-dir).
# Arguments VAR=VALUE go to the environment of every run (e.g.
# MLRT_PS_SHM_MIN=4: every push's values through shared memory;
# PS_CHECK_PUSHPULL=1: the workers push and pull with one call).
. "$(dirname "$0")/lib.sh"

for kv in "$@"; do export "$kv"; done

STEPS=${PS_FAILOVER_STEPS:-3000}
mkdir -p "$TMP/ref" "$TMP/run" "$TMP/norep"

"$MLRUN" --servers 3 -np 2 --no-tag-output "$PS_CHECK" train "$TMP/ref" $STEPS \
	>"$TMP/ref.out" 2>"$TMP/ref.err" || fail "undisturbed run: $(cat "$TMP/ref.err")"

"$MLRUN" --servers 3 -np 2 --no-tag-output "$PS_CHECK" train "$TMP/run" $STEPS \
	>"$TMP/run.out" 2>"$TMP/run.err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 3 "$TMP/run/server-*.pid" 20 || fail "servers did not start: $(cat "$TMP/run.err")"
first=$(cat "$TMP/run/server-1.pid")
sleep 0.8
kill -9 "$first" || fail "cannot kill server 1"
# mlrun starts server 1 again; it catches up on ranges 0 and 1.
deadline=$((SECONDS + 20))
until [ "$(grep -c 'server 1 is back: backup of range' "$TMP/run.err")" -ge 2 ]; do
	[ $SECONDS -lt $deadline ] || fail "server 1 did not rejoin: $(cat "$TMP/run.err")"
	sleep 0.05
done
kill -9 "$(cat "$TMP/run/server-2.pid")" || fail "cannot kill server 2"
wait "$mlrun_pid" || fail "the run failed after the kills: $(cat "$TMP/run.err")"

grep -q 'server 1 (host .*) was killed by signal 9 (SIGKILL); its backup takes over' "$TMP/run.err" ||
	fail "mlrun did not report the lost server: $(cat "$TMP/run.err")"
grep -q 'restarting' "$TMP/run.err" && fail "the job restarted: $(cat "$TMP/run.err")"
took1=$(sed -n 's/.*server 2 answered for range 1 \([0-9]*\) ms after server 1 died.*/\1/p' \
	"$TMP/run.err" | sort -n | head -1)
took2=$(sed -n 's/.*server 1 answered for range 1 \([0-9]*\) ms after server 2 died.*/\1/p' \
	"$TMP/run.err" | sort -n | head -1)
[ -n "$took1" ] && [ -n "$took2" ] || fail "no worker reported both failovers: $(cat "$TMP/run.err")"
cmp "$TMP/ref/final.bin" "$TMP/run/final.bin" ||
	fail "final parameters differ from the undisturbed run"
echo "server 1 killed: server 2 served range 1 $took1 ms later; server 1 rejoined as backup"
echo "server 2 killed: the rejoined server 1 served range 1 $took2 ms later"
echo "final parameters identical to the undisturbed run"

# The same with one worker in ASYNC mode: the backups take the workers'
# copies in the order their primaries took the pushes, and a backup taking
# over takes the copies still waiting; the result is bitwise the same.
mkdir -p "$TMP/aref" "$TMP/arun"
PS_CHECK_ASYNC=1 MLRT_LOG_LEVEL=info "$MLRUN" --servers 3 -np 1 --no-tag-output "$PS_CHECK" \
	train "$TMP/aref" $STEPS >"$TMP/aref.out" 2>"$TMP/aref.err" ||
	fail "undisturbed async run: $(cat "$TMP/aref.err")"
# Undisturbed, every push reaches the backups as the worker's copy.
grep -q "server 1: as a backup it took $STEPS pushes from the workers' copies and 0 forwarded" \
	"$TMP/aref.err" || fail "the backups did not take the workers' copies: $(cat "$TMP/aref.err")"
if [ -n "${MLRT_PS_SHM_MIN:-}" ]; then
	grep -q "server 1: read the values of [1-9][0-9]* pushes and copies in the workers' shared" \
		"$TMP/aref.err" || fail "the values did not go through shared memory: $(cat "$TMP/aref.err")"
	echo "values through shared memory (MLRT_PS_SHM_MIN=$MLRT_PS_SHM_MIN)"
fi
PS_CHECK_ASYNC=1 "$MLRUN" --servers 3 -np 1 --no-tag-output "$PS_CHECK" train "$TMP/arun" \
	$STEPS >"$TMP/arun.out" 2>"$TMP/arun.err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 3 "$TMP/arun/server-*.pid" 20 || fail "servers did not start (async)"
sleep 0.5
kill -9 "$(cat "$TMP/arun/server-1.pid")" || fail "cannot kill server 1 (async)"
wait "$mlrun_pid" || fail "the async run failed after the kill: $(cat "$TMP/arun.err")"
grep -q 'server 2 answered for range 1' "$TMP/arun.err" ||
	fail "the async run did not fail over: $(cat "$TMP/arun.err")"
cmp "$TMP/aref/final.bin" "$TMP/arun/final.bin" ||
	fail "async: final parameters differ from the undisturbed run"
echo "async, one worker: server 1 killed, final parameters identical to the undisturbed run"

# Without replication the keys of a dead server are gone: the job fails,
# naming it (mlrun would restart it from a checkpoint under a restart policy).
"$MLRUN" --servers 3 --ps-replicas 0 -np 2 --no-tag-output "$PS_CHECK" train "$TMP/norep" \
	$STEPS >"$TMP/norep.out" 2>"$TMP/norep.err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 3 "$TMP/norep/server-*.pid" 20 || fail "servers did not start (no replicas)"
sleep 0.5
kill -9 "$(cat "$TMP/norep/server-1.pid")"
wait "$mlrun_pid" && fail "without replicas the job should fail"
grep -q 'failed in generation 0: server 1 (host .*) was killed by signal 9' "$TMP/norep.err" ||
	fail "no root cause naming server 1: $(cat "$TMP/norep.err")"
echo "without replicas: the job fails naming server 1"

# Without replication, a whole-job restart resumes from the servers' shard
# checkpoints: every push made before the last checkpoint is there.
mkdir -p "$TMP/resume"
"$MLRUN" --servers 2 --ps-replicas 0 --ps-ckpt-dir "$TMP/resume/ckpt" --ps-ckpt-interval 0.1 \
	--restart-policy on-failure --max-restarts 1 -np 2 --no-tag-output \
	"$PS_CHECK" resume "$TMP/resume" 7 >"$TMP/resume.out" 2>"$TMP/resume.err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")
wait_for_files 1 "$TMP/resume/pushed" 20 || fail "the pushes did not finish: $(cat "$TMP/resume.err")"
wait_for_files 2 "$TMP/resume/server-*.pid" 5 || fail "no server pids"
sleep 0.5 # several checkpoint intervals
kill -9 "$(cat "$TMP/resume/server-1.pid")"
wait "$mlrun_pid" || fail "the restarted job failed: $(cat "$TMP/resume.err")"
[ "$(grep -c '^resume: worker [01] ok$' "$TMP/resume.out")" -eq 2 ] ||
	fail "after the restart: $(cat "$TMP/resume.out" "$TMP/resume.err")"
grep -q 'restarting the gang as generation 1' "$TMP/resume.err" || fail "no restart: $(cat "$TMP/resume.err")"
echo "without replicas, under a restart policy: the servers reloaded their shard checkpoints"
