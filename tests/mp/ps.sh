# Parameter server through mlrun --servers S -np W: exact sums with 1..3
# servers and 1..4 workers; every optimizer, in SYNC mode against a local
# replay of the summed gradients and in ASYNC mode with one worker; push+pull
# in one call; push values through shared memory;
# bounded staleness never exceeded (the servers' own count); nonblocking
# requests beyond the in-flight limit; errors.
. "$(dirname "$0")/lib.sh"

run() { # SERVERS WORKERS ARGS...
	local s=$1 w=$2
	shift 2
	MLRT_LOG_LEVEL=info "$MLRUN" --servers "$s" -np "$w" --no-tag-output "$PS_CHECK" "$@" \
		>"$TMP/out" 2>"$TMP/err" || fail "ps_check $* ($s servers, $w workers): $(cat "$TMP/err")"
	[ "$(grep -c "^$1: worker [0-9]* ok$" "$TMP/out")" -eq "$w" ] ||
		fail "ps_check $* ($s servers, $w workers): $(cat "$TMP/out" "$TMP/err")"
}

for s in 1 2 3; do
	for w in 1 2 4; do
		run $s $w sum
	done
done
echo "sum: exact with 1-3 servers x 1, 2, 4 workers"

for opt in sum sgd momentum adagrad adam ftrl; do
	run 3 4 sync $opt
	run 2 1 async $opt
done
echo "optimizers: SYNC (3 servers, 4 workers) and ASYNC equal to the local replay"

for k in 1 3; do
	run 2 3 bounded $k
	leads=$(sed -n 's/.*pulls were answered at most \([0-9]*\) pushes ahead.*/\1/p' "$TMP/err")
	[ "$(echo "$leads" | wc -w)" -eq 2 ] || fail "bounded $k: no lead reported: $(cat "$TMP/err")"
	for l in $leads; do
		[ "$l" -le $k ] || fail "bounded $k: a pull was answered $l pushes ahead"
	done
	echo "bounded staleness $k: largest lead served $(echo $leads | tr ' ' /)"
done

run 2 3 many
echo "many: 600 nonblocking pushes and pulls per worker, exact; errors come back from the wait"

MLRT_LOG_LEVEL=info "$MLRUN" --servers 2 --evaluator -np 2 --no-tag-output "$PS_CHECK" evaluate 30 \
	>"$TMP/out" 2>"$TMP/err" || fail "evaluate: $(cat "$TMP/err")"
grep -q '^evaluate: evaluator saw [0-9]* values$' "$TMP/out" &&
	[ "$(grep -c '^evaluate: worker [01] ok$' "$TMP/out")" -eq 2 ] ||
	fail "evaluate: $(cat "$TMP/out" "$TMP/err")"
grep -q 'the evaluator pulls; it does not push' "$TMP/err" || fail "evaluate: push not refused"
echo "evaluator: pulled while the workers trained; its push refused"

# One push+pull per step (mlrt_ps_push_pull) gives what a push, then a pull gives.
PS_CHECK_PUSHPULL=1 run 3 4 sync adam
PS_CHECK_PUSHPULL=1 run 2 1 async adagrad
mkdir -p "$TMP/train" "$TMP/train_pp"
run 2 2 train "$TMP/train" 200
PS_CHECK_PUSHPULL=1 run 2 2 train "$TMP/train_pp" 200
cmp "$TMP/train/final.bin" "$TMP/train_pp/final.bin" ||
	fail "training with push+pull ended with other values than with push, then pull"
echo "push+pull: SYNC Adam and ASYNC Adagrad equal the replay; 200 SYNC steps bitwise as push, then pull"

# Push values through the workers' shared memory (every push: MLRT_PS_SHM_MIN=4)
# give the same exact results; with MLRT_PS_SHM=0 they go over the sockets.
shm_read() { grep -c "read the values of [1-9][0-9]* pushes and copies in the workers' shared" "$TMP/err"; }
export MLRT_PS_SHM_MIN=4
run 2 4 sum
[ "$(shm_read)" -eq 2 ] || fail "shm sum: the servers did not read shared values: $(cat "$TMP/err")"
run 3 4 sync adam
[ "$(shm_read)" -eq 3 ] || fail "shm sync: the servers did not read shared values: $(cat "$TMP/err")"
run 2 1 async ftrl
run 2 3 many
[ "$(shm_read)" -eq 2 ] || fail "shm many: the servers did not read shared values: $(cat "$TMP/err")"
MLRT_PS_SHM=0 run 2 4 sum
[ "$(shm_read)" -eq 0 ] || fail "MLRT_PS_SHM=0: the servers read shared values: $(cat "$TMP/err")"
unset MLRT_PS_SHM_MIN
echo "values through shared memory: exact sums, SYNC Adam, ASYNC FTRL, many; MLRT_PS_SHM=0 turns it off"

run 1 2 errors
grep -q 'key 42 holds 4 floats, not 5' "$TMP/err" || fail "errors: $(cat "$TMP/err")"
echo "errors: ok"
