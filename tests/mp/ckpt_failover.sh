# SIGKILL a random worker of a checkpointing trainer four times, at random
# moments and twice while a checkpoint is being written: under
# --restart-policy on-failure the run completes, and every rank's final
# state is bitwise identical to an uninterrupted run's.
. "$(dirname "$0")/lib.sh"

NP=3 STEPS=${FAILOVER_STEPS:-600} EVERY=20 MIB=2
seed=${FAILOVER_SEED:-$RANDOM}
RANDOM=$seed
echo "kill schedule seed $seed (FAILOVER_SEED=$seed to repeat)"

mkdir -p "$TMP/ref" "$TMP/run"
"$MLRUN" -np $NP --no-tag-output "$CKPT_TRAINER" "$TMP/ref/ck" $STEPS $EVERY "$TMP/ref" $MIB \
	>"$TMP/ref.out" 2>"$TMP/ref.err" || fail "uninterrupted run: $(cat "$TMP/ref.err")"

"$MLRUN" -np $NP --no-tag-output --restart-policy on-failure --max-restarts 8 \
	"$CKPT_TRAINER" "$TMP/run/ck" $STEPS $EVERY "$TMP/run" $MIB >"$TMP/run.out" 2>"$TMP/run.err" &
mlrun_pid=$!
cleanup_hooks+=("kill -9 $mlrun_pid 2>/dev/null")

# kill_in GEN HOW: once generation GEN runs, kill a random rank, after a
# random pause (HOW=pause) or as soon as a checkpoint file is being
# written (HOW=save: a temporary file newer than the generation's start).
kill_in() {
	local gen=$1 how=$2 victim=$((RANDOM % NP)) deadline
	wait_for_files $NP "$TMP/run/pid-g$gen-r*" 30 || return 1
	if [ "$how" = pause ]; then
		sleep "0.$((RANDOM % 6 + 1))"
	else
		deadline=$((SECONDS + 20))
		until [ -n "$(find "$TMP/run/ck" -name '*.tmp' -newer "$TMP/run/pid-g$gen-r0" 2>/dev/null)" ]; do
			[ $SECONDS -lt $deadline ] || return 1
			sleep 0.002
		done
	fi
	kill -9 "$(pgrep -f "^$CKPT_TRAINER $TMP/run/ck" | sed -n "$((victim + 1))p")" 2>/dev/null ||
		return 1
	echo "generation $gen: killed a worker ($how)"
}

kill_in 0 pause || fail "generation 0 ended before its kill: $(cat "$TMP/run.err")"
kill_in 1 save || fail "no save seen in generation 1: $(cat "$TMP/run.err")"
kill_in 2 pause || fail "generation 2 ended before its kill: $(cat "$TMP/run.err")"
kill_in 3 save || fail "no save seen in generation 3: $(cat "$TMP/run.err")"
wait "$mlrun_pid" || fail "the interrupted run failed: $(tail -20 "$TMP/run.err")"

grep -c 'restored step' "$TMP/run.out" | grep -qv '^0$' || fail "no restart restored a step"
grep '^rank 0: restored step' "$TMP/run.out" | sed 's/^/  /'
for r in $(seq 0 $((NP - 1))); do
	cmp "$TMP/ref/final-r$r.bin" "$TMP/run/final-r$r.bin" ||
		fail "rank $r's final state differs from the uninterrupted run"
done
echo "final state of $NP ranks identical to the uninterrupted run after 4 kills"
