# The same program runs under Open MPI's mpirun and gets ranks 0..3 from
# OMPI_COMM_WORLD_*; the store is bootstrapped through MPI when mlrt was
# built with it, else through MASTER_ADDR/MASTER_PORT.
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
