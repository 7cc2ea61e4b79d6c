# mlrt_report: two ranks under mlrun append their metrics to
# MLRT_METRICS_FILE, one whole line per report, with values that read back
# exactly; the store holds each rank's newest values (checked by the
# worker); bad names and non-finite values give MLRT_ERR_INVALID and write
# nothing; an unwritable MLRT_METRICS_FILE gives MLRT_ERR_IO and a message
# naming the file.
. "$(dirname "$0")/lib.sh"

f="$TMP/metrics.txt"
MLRT_METRICS_FILE="$f" timeout 60 "$MLRUN" -np 2 --no-tag-output "$REPORT_CHECK" \
	>"$TMP/out" 2>"$TMP/err" || fail "mlrun exited $?: $(cat "$TMP/err")"
for r in 0 1; do
	grep -q "^report_check: rank $r: ok$" "$TMP/out" || fail "rank $r: $(cat "$TMP/out" "$TMP/err")"
done
[ "$(wc -l <"$f")" -eq 8 ] || fail "want 8 lines, got: $(cat "$f")"
grep -vqE '^(loss|accuracy)=[0-9.]+ step=[0-9]+ rank=[01]$' "$f" && fail "malformed line in: $(cat "$f")"
# loss = 0.5 + rank + 0.25 * step; 0.1 prints as %.17g does.
want="accuracy=0.10000000000000001 step=7 rank=0
accuracy=0.10000000000000001 step=7 rank=1
loss=0.5 step=0 rank=0
loss=0.75 step=1 rank=0
loss=1 step=2 rank=0
loss=1.5 step=0 rank=1
loss=1.75 step=1 rank=1
loss=2 step=2 rank=1"
[ "$(LC_ALL=C sort "$f")" = "$want" ] || fail "metrics file: $(cat "$f")"
# Each rank's lines come in the order it reported them.
for r in 0 1; do
	steps=$(sed -n "s/^loss=.* step=\([0-9]*\) rank=$r$/\1/p" "$f" | tr '\n' ' ')
	[ "$steps" = "0 1 2 " ] || fail "rank $r's loss steps in file order: '$steps'"
done
echo "ok: metrics file"

# A bad name is refused: mlrt_report returns MLRT_ERR_INVALID, the worker
# exits 3, mlrun exits with that code, and nothing reaches the file.
: >"$f"
MLRT_METRICS_FILE="$f" timeout 60 "$MLRUN" -np 2 --no-tag-output --restart-policy never \
	"$REPORT_CHECK" name "bad name" >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 3 ] || fail "bad name: mlrun exited $rc, want 3: $(cat "$TMP/out" "$TMP/err")"
# (The first rank to fail ends the gang, so the other may not get to print.)
grep -q '^report_check: rank [01]: invalid argument$' "$TMP/out" ||
	fail "bad name: want MLRT_ERR_INVALID: $(cat "$TMP/out")"
grep -q "metric name 'bad name' has character 0x20" "$TMP/err" ||
	fail "bad name: no message naming it: $(cat "$TMP/err")"
[ -s "$f" ] && fail "a refused report reached the file: $(cat "$f")"
echo "ok: bad name refused"

# The same program with a good name passes, so the failure above was the name.
MLRT_METRICS_FILE="$f" timeout 60 "$MLRUN" -np 2 --no-tag-output "$REPORT_CHECK" name good_name \
	>"$TMP/out" 2>"$TMP/err" || fail "good name: mlrun exited $?: $(cat "$TMP/out" "$TMP/err")"
[ "$(grep -c '^good_name=1 step=0 rank=[01]$' "$f")" -eq 2 ] || fail "good name: $(cat "$f")"

# An unwritable metrics file: MLRT_ERR_IO and a message naming the file.
MLRT_METRICS_FILE="$TMP/no/such/dir/m.txt" timeout 60 "$MLRUN" -np 1 --no-tag-output \
	--restart-policy never "$REPORT_CHECK" name loss >"$TMP/out" 2>"$TMP/err"
rc=$?
[ $rc -eq 3 ] || fail "unwritable file: mlrun exited $rc, want 3: $(cat "$TMP/out" "$TMP/err")"
grep -q '^report_check: rank 0: input/output error$' "$TMP/out" ||
	fail "unwritable file: want MLRT_ERR_IO: $(cat "$TMP/out")"
grep -q "MLRT_METRICS_FILE=$TMP/no/such/dir/m.txt" "$TMP/err" ||
	fail "unwritable file: message does not name it: $(cat "$TMP/err")"
echo "ok: unwritable file"
