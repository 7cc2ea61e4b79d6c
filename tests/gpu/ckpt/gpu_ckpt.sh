# GPU checkpoint benchmark (bench_gpu_ckpt.c): 8 GiB of device buffers
# (BENCH_GPU_CKPT_GIB), async save stall and commit time against a plain
# write()+fsync(), on the disk that holds ${BENCH_GPU_CKPT_DIR:-/var/tmp}
# (not a tmpfs: fsync must reach a disk).  Exit 77 without a GPU.
set -eu
dir=$(mktemp -d "${BENCH_GPU_CKPT_DIR:-/var/tmp}/mlrt-bench-gpu-ckpt.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "# filesystem: $(df -h --output=source,fstype,avail "$dir" | tail -1)"
rc=0
"$BENCH_GPU_CKPT" "$dir" || rc=$?
exit $rc
