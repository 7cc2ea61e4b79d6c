# Checkpoint benchmark: 4 ranks, 1 GiB of state in all, on the disk that
# holds ${BENCH_CKPT_DIR:-/var/tmp} (not a tmpfs: fsync must reach a disk).
# BENCH_CKPT_MIB (per rank, default 256) and BENCH_CKPT_REPS (default 5).
set -eu
dir=$(mktemp -d "${BENCH_CKPT_DIR:-/var/tmp}/mlrt-bench-ckpt.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "# filesystem: $(df -h --output=source,fstype,avail "$dir" | tail -1)"
"$MLRUN" -np "${BENCH_CKPT_NP:-4}" --no-tag-output "$BENCH_CKPT" "$dir" \
	--mib-per-rank "${BENCH_CKPT_MIB:-256}" --reps "${BENCH_CKPT_REPS:-5}"
