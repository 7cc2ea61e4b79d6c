# mlrun --rdzv-backend etcd: three "hosts" (MLRT_HOSTNAME) run one elastic
# job (--nnodes 2:3) whose store is a real etcd on loopback.  The first
# host's mlrun, the one that would serve the store without etcd, is killed
# with its workers: the other two go on as a smaller gang and finish, and
# the job leaves no keys behind in etcd.
. "$(dirname "$0")/lib.sh"

command -v etcd >/dev/null || { echo "SKIP: etcd is not installed (Debian: etcd-server)" >&2; exit 77; }
grep -q '^#define HAVE_ETCD 1' "$MESON_BUILD_ROOT/mlrt_config.h" ||
	{ echo "SKIP: mlrt was built without the etcd store backend (-Detcd)" >&2; exit 77; }
. "$(dirname "$0")/etcd.sh"

start_etcd
endpoint=http://${ADDR#etcd://}
job=etcd-job-$$
STEPS=300

for h in hostA hostB hostC; do
	MLRT_HOSTNAME=$h timeout 120 "$MLRUN" --rdzv-backend etcd --rdzv-endpoint "$endpoint" \
		--job-id "$job" --nnodes 2:3 -np 2 --max-restarts 3 --no-tag-output \
		-- "$ELASTIC_TRAINER" "$TMP/ck" $STEPS 20 20 >"$TMP/$h.out" 2>"$TMP/$h.err" &
	eval "pid_$h=$!"
	cleanup_hooks+=("kill -9 $! 2>/dev/null")
done

deadline=$((SECONDS + 60))
until grep -q "^step 50 " "$TMP/hostA.out"; do
	[ $SECONDS -lt $deadline ] || fail "no progress: $(cat "$TMP"/host*.err)"
	sleep 0.05
done
kill -9 "$(pgrep -P "$pid_hostA")" # mlrun itself, under timeout
t0=$(now_ms)
wait "$pid_hostB" || fail "hostB's mlrun exited $?: $(tail "$TMP/hostB.err")"
wait "$pid_hostC" || fail "hostC's mlrun exited $?: $(tail "$TMP/hostC.err")"
grep -q "^finished $STEPS steps, world 4, generation 1" "$TMP/hostB.out" ||
	fail "the survivors did not finish: $(tail -n 3 "$TMP"/host*.out; tail "$TMP"/host*.err)"
t=$(sed -n "s/^generation 1 world 4 completed step [0-9]* at //p" "$TMP/hostB.out")
echo "ok: hostA's mlrun killed; hostB and hostC went on from the etcd store and finished" \
	"(first step of generation 1 after $((t - t0)) ms): $(tail -1 "$TMP/hostB.out")"
grep 'mlrun: membership' "$TMP/hostB.err" | sed 's/^/  | /'

rc=0
"$STORE_OP" "$ADDR" get "$job/generation" >/dev/null 2>&1 || rc=$?
[ $rc -eq 5 ] || fail "the job's keys are still in etcd (get $job/generation: status $rc)"
echo "ok: the job's keys are gone from etcd"
