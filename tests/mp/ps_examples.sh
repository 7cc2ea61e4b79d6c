# The parameter-server examples (docs/examples.md):
#  - ps_logreg under mlrun --servers 2 -np 2 comes within 0.03 of the
#    accuracy of the true weights on the held-out set;
#  - ps_dense trained data-parallel (allreduce, mlrun -np 2) and on the
#    parameter server (SYNC SGD, mlrun --servers 1 -np 2) scores >= 0.9 both
#    ways, within 0.02, and with 2 workers ends with bitwise equal weights;
#  - either program in a job of the wrong kind exits 2 with a message
#    instead of hanging.
. "$(dirname "$0")/lib.sh"

# value FILE PREFIX: the number after "PREFIX " on the line starting with it.
value() {
	sed -n "s/^$2 \([0-9]*\.[0-9]*\).*/\1/p" "$1" | tail -n 1
}

# run NAME ARGS...: mlrun ARGS, bounded to 60 s, output in $TMP/NAME.{out,err}.
run() {
	local name=$1 rc=0
	shift
	timeout 60 "$MLRUN" --no-tag-output "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
	[ $rc -ne 124 ] || fail "$name: still running after 60 s: $(cat "$TMP/$name.out" "$TMP/$name.err")"
	return $rc
}

# ---- ps_logreg ----
start=$SECONDS
run logreg --servers 2 -np 2 "$PS_LOGREG" ||
	fail "ps_logreg exited $?: $(cat "$TMP/logreg.out" "$TMP/logreg.err")"
acc=$(value "$TMP/logreg.out" "held-out accuracy:")
ref=$(value "$TMP/logreg.out" "true-weights accuracy:")
[ -n "$acc" ] && [ -n "$ref" ] || fail "ps_logreg: no accuracy lines: $(cat "$TMP/logreg.out")"
awk -v a="$acc" -v r="$ref" 'BEGIN { exit !(a >= r - 0.03 && a <= 1 && r > 0.6) }' ||
	fail "ps_logreg: held-out accuracy $acc, true weights $ref: $(cat "$TMP/logreg.out")"
echo "ok: ps_logreg held-out accuracy $acc, true weights $ref ($((SECONDS - start)) s)"

run logreg_noservers -np 2 "$PS_LOGREG" --examples 100 &&
	fail "ps_logreg without servers succeeded"
[ $? -eq 2 ] || fail "ps_logreg without servers: want exit 2: $(cat "$TMP/logreg_noservers.err")"
grep -q 'no parameter servers' "$TMP/logreg_noservers.err" ||
	fail "ps_logreg without servers: $(cat "$TMP/logreg_noservers.err")"
echo "ok: ps_logreg without servers exits 2"

# ---- ps_dense ----
start=$SECONDS
run dense_ar -np 2 "$PS_DENSE" --mode allreduce --weights-out "$TMP/w-allreduce" ||
	fail "ps_dense --mode allreduce exited $?: $(cat "$TMP/dense_ar.out" "$TMP/dense_ar.err")"
run dense_ps --servers 1 -np 2 "$PS_DENSE" --mode ps --compare-weights "$TMP/w-allreduce" ||
	fail "ps_dense --mode ps exited $?: $(cat "$TMP/dense_ps.out" "$TMP/dense_ps.err")"
a1=$(value "$TMP/dense_ar.out" "test accuracy:")
a2=$(value "$TMP/dense_ps.out" "test accuracy:")
[ -n "$a1" ] && [ -n "$a2" ] ||
	fail "ps_dense: no test accuracy: $(cat "$TMP/dense_ar.out" "$TMP/dense_ps.out")"
awk -v a="$a1" -v b="$a2" \
	'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a >= 0.9 && b >= 0.9 && d <= 0.02) }' ||
	fail "ps_dense: allreduce $a1, ps $a2: want both >= 0.9 and within 0.02"
grep -q '^final weights: bitwise equal to ' "$TMP/dense_ps.out" ||
	fail "ps_dense: with 2 workers the modes' weights differ: $(cat "$TMP/dense_ps.out")"
f1=$(sed -n 's/^weights fingerprint: //p' "$TMP/dense_ar.out")
f2=$(sed -n 's/^weights fingerprint: //p' "$TMP/dense_ps.out")
[ -n "$f1" ] && [ "$f1" = "$f2" ] || fail "ps_dense: fingerprints '$f1' and '$f2'"
echo "ok: ps_dense allreduce $a1, ps $a2, bitwise equal weights ($((SECONDS - start)) s)"

run dense_wrong --servers 1 -np 2 "$PS_DENSE" --mode allreduce &&
	fail "ps_dense --mode allreduce with servers succeeded"
[ $? -eq 2 ] ||
	fail "ps_dense --mode allreduce with servers: want exit 2: $(cat "$TMP/dense_wrong.err")"
grep -q 'does not use the job.s servers' "$TMP/dense_wrong.err" ||
	fail "ps_dense --mode allreduce with servers: $(cat "$TMP/dense_wrong.err")"
echo "ok: ps_dense --mode allreduce in a job with servers exits 2"
