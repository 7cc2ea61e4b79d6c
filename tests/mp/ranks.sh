# mlrun -np 8 gives 8 workers distinct ranks 0..7, world size 8, local
# ranks 0..7; --tag-output prefixes lines; --log-dir keeps each rank's output.
. "$(dirname "$0")/lib.sh"

"$MLRUN" -np 8 --no-tag-output --log-dir "$TMP/logs" -- "$PROBE" >"$TMP/out" 2>"$TMP/err" ||
	fail "mlrun exited $? : $(cat "$TMP/err")"
[ "$(grep -c '^probe ' "$TMP/out")" -eq 8 ] || fail "want 8 probe lines, got: $(cat "$TMP/out")"
ranks=$(sed -n 's/^probe rank=\([0-9]*\) .*/\1/p' "$TMP/out" | sort -n | tr '\n' ' ')
[ "$ranks" = "0 1 2 3 4 5 6 7 " ] || fail "ranks: '$ranks'"
locals=$(sed -n 's/.* local_rank=\([0-9]*\) .*/\1/p' "$TMP/out" | sort -n | tr '\n' ' ')
[ "$locals" = "0 1 2 3 4 5 6 7 " ] || fail "local ranks: '$locals'"
[ "$(grep -c ' size=8 local_rank=[0-7] local_size=8 gen=0 restarts=0 launcher=mlrun$' "$TMP/out")" -eq 8 ] ||
	fail "identity lines: $(cat "$TMP/out")"
for r in 0 1 2 3 4 5 6 7; do
	grep -q "^probe rank=$r " "$TMP/logs/rank-$r.log" || fail "rank-$r.log lacks rank $r's line"
done

"$MLRUN" -np 2 --tag-output "$PROBE" >"$TMP/tagged" 2>&1 || fail "tagged run failed"
grep -q '^\[0\]: probe rank=0 ' "$TMP/tagged" || fail "no [0]: prefix: $(cat "$TMP/tagged")"
grep -q '^\[1\]: probe rank=1 ' "$TMP/tagged" || fail "no [1]: prefix: $(cat "$TMP/tagged")"
echo "ok: 8 ranks, tags and log files"

# --bind-to: by default each worker gets a CPU of its own when they fit
# (Open MPI's default); --bind-to none leaves them free.
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
	"$MLRUN" -np 2 --no-tag-output -- sh -c 'echo "$MLRT_LOCAL_RANK $(taskset -pc $$ | sed "s/.*: //")"' \
		>"$TMP/bind" 2>&1 || fail "bind run failed: $(cat "$TMP/bind")"
	cpus=$(sort "$TMP/bind" | awk '{print $2}' | tr '\n' ' ')
	case "$cpus" in
	*,* | *-*) fail "workers not bound to single CPUs: $(cat "$TMP/bind")" ;;
	esac
	[ "$(echo $cpus | tr ' ' '\n' | sort -u | wc -l)" -eq 2 ] || fail "workers share a CPU: $cpus"
	"$MLRUN" -np 2 --bind-to none --no-tag-output -- sh -c 'taskset -pc $$ | sed "s/.*: //"' \
		>"$TMP/nobind" 2>&1 || fail "--bind-to none run failed"
	grep -qv '^[0-9]*$' "$TMP/nobind" || fail "--bind-to none still bound: $(cat "$TMP/nobind")"
	echo "ok: binding ($cpus)"
fi
