# The flagship example: `mlrun -np 4 mlp --ckpt-dir D` learns the digits
# (test accuracy >= 0.95) and leaves committed checkpoint steps in D.  A
# run whose last rank is SIGKILLed mid-training restarts from its last
# checkpoint and ends with weights bitwise identical to an uninterrupted
# run's.
. "$(dirname "$0")/lib.sh"

# accuracy FILE: the value of the "test accuracy: X" line, which must be last.
accuracy() {
	tail -n 1 "$1" | sed -n 's/^test accuracy: \([01]\.[0-9]\{4\}\)$/\1/p'
}

timeout 300 "$MLRUN" -np 4 --no-tag-output -- "$MLP" --ckpt-dir "$TMP/ck" \
	--weights-out "$TMP/w-whole" >"$TMP/out" 2>"$TMP/err" ||
	fail "mlrun exited $?: $(cat "$TMP/out" "$TMP/err")"
acc=$(accuracy "$TMP/out")
[ -n "$acc" ] || fail "no 'test accuracy: 0.XXXX' last line: $(cat "$TMP/out")"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.95) }' || fail "test accuracy $acc < 0.95: $(cat "$TMP/out")"
grep -q '^epoch .* loss [0-9.]*' "$TMP/out" || fail "no epoch lines: $(cat "$TMP/out")"
grep -q 'restored' "$TMP/out" && fail "a fresh directory was restored from: $(cat "$TMP/out")"
steps=$(sed -n 's/^mlp: \([0-9]*\) steps in .*/\1/p' "$TMP/out")
[ -n "$steps" ] || fail "no step count: $(cat "$TMP/out")"
[ -f "$TMP/ck/step-$steps/manifest.h5" ] || fail "no manifest for the last step $steps: $(ls -R "$TMP/ck")"
n=$(compgen -G "$TMP/ck/step-*/manifest.h5" | wc -l)
[ "$n" -ge 2 ] || fail "want several committed steps, got $n: $(ls -R "$TMP/ck")"
nparams=$((64 * 64 + 64 + 10 * 64 + 10))
[ "$(stat -c %s "$TMP/w-whole")" -eq $((nparams * 4)) ] || fail "weights file size"
echo "ok: test accuracy $acc after $steps steps, $n checkpoints kept"

# Running again on the finished directory restores the last step, trains
# no further and scores the same.
timeout 300 "$MLRUN" -np 4 --no-tag-output -- "$MLP" --ckpt-dir "$TMP/ck" \
	--weights-out "$TMP/w-again" >"$TMP/out2" 2>"$TMP/err2" ||
	fail "second run exited $?: $(cat "$TMP/out2" "$TMP/err2")"
grep -q "^rank 0: restored step $steps (restart 0)$" "$TMP/out2" || fail "not restored: $(cat "$TMP/out2")"
[ "$(accuracy "$TMP/out2")" = "$acc" ] || fail "second run scored: $(cat "$TMP/out2")"
cmp -s "$TMP/w-whole" "$TMP/w-again" || fail "the restored weights differ"
echo "ok: restored the finished run"

# Fault: the last rank dies by SIGKILL before step 75; mlrun restarts the
# gang, which resumes from step 50 and ends bitwise where the whole run did.
timeout 300 "$MLRUN" -np 4 --no-tag-output --max-restarts 1 -- "$MLP" --ckpt-dir "$TMP/ck2" \
	--crash-at-step 75 --weights-out "$TMP/w-crash" >"$TMP/out3" 2>"$TMP/err3" ||
	fail "crash run exited $?: $(cat "$TMP/out3" "$TMP/err3")"
grep -q 'killed by signal 9' "$TMP/err3" || fail "no worker was killed: $(cat "$TMP/err3")"
grep -q '^rank 0: restored step 50 (restart 1)$' "$TMP/out3" || fail "no resume: $(cat "$TMP/out3")"
[ "$(accuracy "$TMP/out3")" = "$acc" ] || fail "resumed run scored: $(cat "$TMP/out3")"
cmp -s "$TMP/w-whole" "$TMP/w-crash" || fail "weights after the restart differ from the whole run's"
echo "ok: resumed after SIGKILL, bitwise identical weights"
