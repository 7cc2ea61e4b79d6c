# SIGKILL a random worker of a checkpointing trainer four times, at random
# moments and twice inside a save (after a step's directory is prepared,
# before its manifest commits it): under
# --restart-policy on-failure the run completes, and every rank's final
# state is bitwise identical to an uninterrupted run's.
. "$(dirname "$0")/lib.sh"

NP=3 STEPS=${FAILOVER_STEPS:-1500} EVERY=20 MIB=2
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

# saving SINCE: true while a step directory changed after file SINCE has
# no manifest yet, i.e. a save is between its start and its commit.
saving() {
	local d
	for d in "$TMP"/run/ck/step-*; do
		[ -d "$d" ] && [ ! -e "$d/manifest.h5" ] && [ "$d" -nt "$1" ] && return 0
	done
	return 1
}

# kill_in GEN HOW: once generation GEN runs, kill a random rank, after a
# random pause (HOW=pause) or inside a save (HOW=save).
kill_in() {
	local gen=$1 how=$2 victim=$((RANDOM % NP)) deadline
	wait_for_files $NP "$TMP/run/pid-g$gen-r*" 30 || return 1
	if [ "$how" = pause ]; then
		sleep "0.$((RANDOM % 4 + 1))"
	else
		deadline=$((SECONDS + 20))
		until saving "$TMP/run/pid-g$gen-r0"; do
			[ $SECONDS -lt $deadline ] || return 1
		done
	fi
	kill -9 "$(cat "$TMP/run/pid-g$gen-r$victim")" || return 1
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
