# mlrun -H passes the agents (and so the workers) MLRT_*, FI_* and NCCL_*
# variables and those named with -x NAME or -x NAME=VALUE, as mpirun -x
# does, and no others: seen through an --rsh that starts from an empty
# environment, as ssh to another machine would.
. "$(dirname "$0")/lib.sh"

port=$((20000 + RANDOM % 12000))
MLRT_TEST_A=a FI_TEST_B=b NCCL_TEST_C=c HEAD_ENV_NAMED=d HEAD_ENV_OTHER=e \
	timeout 120 "$MLRUN" -H hostA:1,hostB:1 --rsh "env -i PATH=$PATH HOME=$HOME T={host}" \
	--rdzv-endpoint "127.0.0.1:$port" --tag-output -x HEAD_ENV_NAMED -x HEAD_ENV_SET=f -- \
	sh -c 'echo "env=${MLRT_TEST_A:--}${FI_TEST_B:--}${NCCL_TEST_C:--}${HEAD_ENV_NAMED:--}${HEAD_ENV_SET:--}${HEAD_ENV_OTHER:--}"' \
	>"$TMP/out" 2>"$TMP/err" || fail "mlrun -H: $(cat "$TMP/out" "$TMP/err")"
for r in 0 1; do
	grep -qxF "[$r]: env=abcdf-" "$TMP/out" || fail "rank $r: want env=abcdf-: $(cat "$TMP/out")"
done
echo "ok: MLRT_*, FI_*, NCCL_* and -x variables reach the workers on both hosts; others do not"
