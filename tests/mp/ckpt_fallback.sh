# Damage to one rank's file of a committed step makes every rank fall back
# to the step before, together: a flipped byte in step 3's rank-1.h5 gives
# step 2 on all three ranks, a truncated rank-2.h5 of step 2 then gives
# step 1; the warnings name file and tensor, and `mlrun ckpt verify` exits 1.
. "$(dirname "$0")/lib.sh"

D=$TMP/ck
run() {
	"$MLRUN" -np 3 --no-tag-output "$CKPT_CHECK" "$@" >"$TMP/out" 2>"$TMP/err" ||
		fail "ckpt_check $*: $(cat "$TMP/out" "$TMP/err")"
	[ "$(grep -c "^$1: rank [0-2] ok$" "$TMP/out")" -eq 3 ] || fail "ckpt_check $*: $(cat "$TMP/out")"
}

run steps-save "$D"
run steps-restore "$D" 3
"$MLRUN" ckpt verify "$D" >/dev/null || fail "verify of intact steps failed"

# Flip a byte in the middle of w's data in step 3's rank-1.h5.
"$MLRUN" ckpt inspect "$D" 3 >"$TMP/inspect" || fail "inspect: $(cat "$TMP/inspect")"
off=$(awk '/^  [^ ]/ {t = $1} t == "w" && $1 == "rank-1.h5" {print $9 + 2002}' "$TMP/inspect")
[ -n "$off" ] || fail "no offset of w in rank-1.h5: $(cat "$TMP/inspect")"
f=$D/step-3/rank-1.h5
b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
printf "\\$(printf %03o $((b ^ 0x01)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
run steps-restore "$D" 2
grep -q 'step 3 is damaged: .*/step-3/rank-1.h5: tensor w fails its CRC32C' "$TMP/err" ||
	fail "no warning naming rank-1.h5 and w: $(cat "$TMP/err")"
echo "flipped byte in step 3: every rank restored step 2"

truncate -s 2048 "$D/step-2/rank-2.h5"
run steps-restore "$D" 1
grep -q 'step 2 is damaged: .*/step-2/rank-2.h5 is 2048 bytes but the manifest says' "$TMP/err" ||
	fail "no warning about the truncated rank-2.h5: $(cat "$TMP/err")"
echo "truncated file in step 2: every rank restored step 1"

"$MLRUN" ckpt verify "$D" >"$TMP/out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "verify exited $rc on damaged steps: $(cat "$TMP/out")"
grep -q '^step 1: ok' "$TMP/out" || fail "verify: step 1 should be ok: $(cat "$TMP/out")"
echo "mlrun ckpt verify: exit 1"
