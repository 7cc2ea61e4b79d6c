# The same program runs under Open MPI's mpirun and gets ranks 0..3 from
# OMPI_COMM_WORLD_*; the store is bootstrapped through MPI when mlrt was
# built with it, else through MASTER_ADDR/MASTER_PORT.  Then the
# collectives suite (coll_check, as collectives.sh runs it under mlrun)
# passes under mpirun -np 4 over tcp and shm, and, in MPI builds, once more
# with the store found through MASTER_ADDR/MASTER_PORT instead.
. "$(dirname "$0")/lib.sh"

command -v mpirun >/dev/null || { echo "SKIP: mpirun (Open MPI) is not installed" >&2; exit 77; }
extra=()
if [ "${MLRT_HAVE_MPI:-0}" != 1 ]; then
	extra=(-x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=$((20000 + RANDOM % 12000)))
fi
timeout 120 mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl self,tcp \
	"${extra[@]}" "$PROBE" >"$TMP/out" 2>"$TMP/err" || fail "mpirun exited $?: $(cat "$TMP/err")"
ranks=$(sed -n 's/^probe rank=\([0-9]*\) size=4 .*launcher=mpi$/\1/p' "$TMP/out" | sort -n | tr '\n' ' ')
[ "$ranks" = "0 1 2 3 " ] || fail "ranks under mpirun: '$ranks': $(cat "$TMP/out" "$TMP/err")"
echo "ok: ranks $ranks"

# coll_check NAME MPIRUN-ARGS...: the suite under mpirun -np 4, 4 distinct ranks.
coll_check() {
	local name=$1 ranks
	shift
	timeout 300 mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl self,tcp "$@" \
		-x MLRT_TIMEOUT_MS=60000 -x MLRT_LOG_LEVEL=info "$COLL_CHECK" >"$TMP/out" 2>"$TMP/err" ||
		fail "coll_check under mpirun ($name): exit $?: $(head -c 3000 "$TMP/err")"
	grep -q "coll_check: 4 ranks: all collectives match the reference" "$TMP/out" ||
		fail "coll_check under mpirun ($name): $(cat "$TMP/out")"
	ranks=$(sed -n 's/^\[mlrt [0-9]*\] info: init: rank \([0-9]*\) of 4 .*, job mpi-.*/\1/p' \
		"$TMP/err" | sort -nu | tr '\n' ' ')
	[ "$ranks" = "0 1 2 3 " ] ||
		fail "coll_check under mpirun ($name): ranks '$ranks': $(head -c 3000 "$TMP/err")"
	echo "ok: mpirun -np 4 coll_check ($name): ranks $ranks"
}
for transport in tcp shm; do
	coll_check "$transport" "${extra[@]}" -x MLRT_TRANSPORT="$transport"
done
if [ "${MLRT_HAVE_MPI:-0}" = 1 ]; then
	coll_check "tcp, store through MASTER_ADDR" -x MLRT_TRANSPORT=tcp -x MASTER_ADDR=127.0.0.1 \
		-x MASTER_PORT=$((20000 + RANDOM % 12000))
fi
