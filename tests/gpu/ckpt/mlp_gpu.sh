# The GPU example: `mlrun -np N mlp_gpu` learns the digits (test accuracy
# >= 0.95) with 1 rank and with 2 ranks (sharing the GPU on a machine with
# one; async device checkpoints), and a 2-rank run whose last rank is
# SIGKILLed before step 75 restarts from the device checkpoint of step 50
# and ends with weights bitwise identical to the uninterrupted 2-rank
# run's.  Exit 77 without a GPU.  The tests mlp_gpu_fake* run it on the
# CPU (tests/gpu/emu/meson.build).
. "$(dirname "$0")/../../mp/lib.sh"

# This checkout's data: the default built into the program is the path of
# the machine that built it, which a bundle run elsewhere does not have.
data=(--data "$(cd "$(dirname "$0")/../../.." && pwd)/data/digits.csv.gz")
[ -r "${data[1]}" ] || fail "cannot read ${data[1]}"

# accuracy FILE: the value of the "test accuracy: X" line, which must be last.
accuracy() {
	tail -n 1 "$1" | sed -n 's/^test accuracy: \([01]\.[0-9]\{4\}\)$/\1/p'
}

# Probe: one epoch as a world of one, without a launcher.
rc=0
timeout 120 "$MLP_GPU" "${data[@]}" --epochs 1 >"$TMP/probe" 2>&1 || rc=$?
[ $rc -eq 77 ] && { cat "$TMP/probe" >&2; exit 77; }
[ $rc -eq 0 ] || fail "mlp_gpu --epochs 1 exited $rc: $(cat "$TMP/probe")"

nparams=$((64 * 64 + 64 + 10 * 64 + 10))
# train NP NAME [options]: run, check accuracy >= 0.95, set $acc; and,
# but for a run restored at its end (again), that it trained.
train() {
	local np=$1 name=$2
	shift 2
	timeout 300 "$MLRUN" -np "$np" --no-tag-output -- "$MLP_GPU" "${data[@]}" "$@" \
		>"$TMP/out-$name" 2>"$TMP/err-$name" ||
		fail "$name: mlrun exited $?: $(cat "$TMP/out-$name" "$TMP/err-$name")"
	acc=$(accuracy "$TMP/out-$name")
	[ -n "$acc" ] || fail "$name: no 'test accuracy: 0.XXXX' last line: $(cat "$TMP/out-$name")"
	awk -v a="$acc" 'BEGIN { exit !(a >= 0.95) }' ||
		fail "$name: test accuracy $acc < 0.95: $(cat "$TMP/out-$name")"
	[ "$name" = again ] || grep -q '^epoch .* loss [0-9.]*' "$TMP/out-$name" ||
		fail "$name: no epoch lines"
}

train 1 one --ckpt-dir "$TMP/ck1" --weights-out "$TMP/w1"
steps=$(sed -n 's/^mlp_gpu: \([0-9]*\) steps in .*/\1/p' "$TMP/out-one")
[ -f "$TMP/ck1/step-$steps/manifest.h5" ] || fail "no manifest for the last step $steps: $(ls -R "$TMP/ck1")"
[ "$(stat -c %s "$TMP/w1")" -eq $((nparams * 4)) ] || fail "weights file size"
"$MLRUN" ckpt verify "$TMP/ck1" >/dev/null || fail "the device checkpoints do not verify"
echo "ok: 1 rank: test accuracy $acc after $steps steps"

train 2 two --ckpt-dir "$TMP/ck2" --ckpt-async --weights-out "$TMP/w2"
acc2=$acc
steps=$(sed -n 's/^mlp_gpu: \([0-9]*\) steps in .*/\1/p' "$TMP/out-two")
[ -f "$TMP/ck2/step-$steps/manifest.h5" ] || fail "no manifest for the last step $steps: $(ls -R "$TMP/ck2")"
echo "ok: 2 ranks, async checkpoints: test accuracy $acc2 after $steps steps"

# Running again on the finished directory restores the device buffers of
# the last step and scores the same.
train 2 again --ckpt-dir "$TMP/ck2" --weights-out "$TMP/w2-again"
grep -q "^rank 0: restored step $steps (restart 0)$" "$TMP/out-again" ||
	fail "not restored: $(cat "$TMP/out-again")"
[ "$acc" = "$acc2" ] || fail "the restored run scored $acc, the whole run $acc2"
cmp -s "$TMP/w2" "$TMP/w2-again" || fail "the restored weights differ"
echo "ok: restored the finished run from its device checkpoint"

timeout 300 "$MLRUN" -np 2 --no-tag-output --max-restarts 1 -- "$MLP_GPU" "${data[@]}" --ckpt-dir "$TMP/ck3" \
	--crash-at-step 75 --weights-out "$TMP/w3" >"$TMP/out3" 2>"$TMP/err3" ||
	fail "crash run exited $?: $(cat "$TMP/out3" "$TMP/err3")"
grep -q 'killed by signal 9' "$TMP/err3" || fail "no worker was killed: $(cat "$TMP/err3")"
grep -q '^rank 0: restored step 50 (restart 1)$' "$TMP/out3" || fail "no resume: $(cat "$TMP/out3")"
[ "$(accuracy "$TMP/out3")" = "$acc2" ] || fail "resumed run scored: $(cat "$TMP/out3")"
cmp -s "$TMP/w2" "$TMP/w3" || fail "weights after the restart differ from the whole run's"
echo "ok: resumed after SIGKILL from the device checkpoint, bitwise identical weights"
