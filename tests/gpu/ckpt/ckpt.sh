# Checkpoints of device memory (sync or async, $1), two ranks sharing the
# GPU: three steps of device buffers and a host one restore bit for bit; a
# flipped byte in step 3's rank-1.h5 (in a device tensor's data) makes
# both ranks fall back to step 2; once no step verifies, restore returns
# MLRT_ERR_NOT_FOUND and leaves every buffer untouched.  Exit 77 without a
# GPU.
. "$(dirname "$0")/../../mp/lib.sh"

mode=${1:?sync or async}
"$CKPT_GPU_CHECK" probe || exit $? # 77: no GPU (the reason is on stderr)

D=$TMP/ck
run() {
	timeout 120 "$MLRUN" -np 2 --no-tag-output "$CKPT_GPU_CHECK" "$@" "$mode" \
		>"$TMP/out" 2>"$TMP/err" || fail "ckpt_gpu_check $* $mode: $(cat "$TMP/out" "$TMP/err")"
	[ "$(grep -c "^$1: rank [01] ok$" "$TMP/out")" -eq 2 ] ||
		fail "ckpt_gpu_check $* $mode: $(cat "$TMP/out" "$TMP/err")"
}

# flip STEP FILE TENSOR: invert one bit in the middle of TENSOR's data.
flip() {
	local off f=$D/step-$1/$2 b
	"$MLRUN" ckpt inspect "$D" "$1" >"$TMP/inspect" || fail "inspect: $(cat "$TMP/inspect")"
	off=$(awk -v t="$3" -v f="$2" '/^  [^ ]/ {n = $1} n == t && $1 == f {print $9 + 2002}' \
		"$TMP/inspect")
	[ -n "$off" ] || fail "no offset of $3 in $2: $(cat "$TMP/inspect")"
	b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
	printf "\\$(printf %03o $((b ^ 0x01)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

run save "$D"
"$MLRUN" ckpt verify "$D" >/dev/null || fail "verify of the saved steps failed"
run restore "$D" 3
echo "$mode: three steps of device buffers saved and step 3 restored bit for bit"

flip 3 rank-1.h5 dev_rank
run restore "$D" 2
grep -q 'step 3 is damaged: .*/step-3/rank-1.h5: tensor dev_rank fails its CRC32C' "$TMP/err" ||
	fail "no warning naming rank-1.h5 and dev_rank: $(cat "$TMP/err")"
echo "$mode: flipped byte in step 3: both ranks restored step 2"

flip 2 rank-0.h5 dev_rep
truncate -s 2048 "$D/step-1/rank-1.h5"
run none "$D"
grep -q 'step 2 is damaged: .*/step-2/rank-0.h5: tensor dev_rep fails its CRC32C' "$TMP/err" ||
	fail "no warning naming rank-0.h5 and dev_rep: $(cat "$TMP/err")"
echo "$mode: no step verifies: not found, device and host buffers untouched"

# With the fake CUDA only: rank 1's device copy fails during step 2.  The
# save must fail on both ranks (async: rank 0 learns it at its next save)
# and leave step 1 as the newest committed step, restorable bit for bit.
if [ -n "${CKPT_GPU_FAKE:-}" ]; then
	rm -rf "$D"
	# 3 device tensors a save: the 4th copy is step 2's first.
	FAKE_CUDA_FAIL_COPY=4 timeout 120 "$MLRUN" -np 2 --no-tag-output "$CKPT_GPU_CHECK" save "$D" \
		"$mode" >"$TMP/out" 2>"$TMP/err" && fail "save with a failing copy succeeded"
	grep -q 'rank 1: cudaMemcpyAsync from the device for tensor dev_rank on device 0 failed' \
		"$TMP/err" || fail "no message naming the failed copy: $(cat "$TMP/err")"
	grep -q 'step 2 was not saved (rank 1: ' "$TMP/err" || fail "step 2 not failed: $(cat "$TMP/err")"
	for r in 0 1; do
		grep -q "rank $r: save [23]: service unavailable" "$TMP/err" ||
			fail "rank $r's save did not fail: $(cat "$TMP/err")"
	done
	"$MLRUN" ckpt ls "$D" | awk 'NR > 1 && $2 == "yes" {print $1}' >"$TMP/steps"
	[ "$(cat "$TMP/steps")" = 1 ] || fail "committed steps after the failure: $(cat "$TMP/steps")"
	run restore "$D" 1
	echo "$mode: a failed device copy failed the save on both ranks; step 1 intact"
fi
