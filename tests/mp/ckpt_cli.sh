# `mlrun ckpt` lists, verifies and inspects a checkpoint written by two
# ranks, then finds a flipped byte, a truncated file and an uncommitted
# step, naming the file and tensor at fault; bad usage exits 2.
. "$(dirname "$0")/lib.sh"

D=$TMP/ck
ckpt() { "$MLRUN" ckpt "$@" >"$TMP/out" 2>"$TMP/err"; }
out() { cat "$TMP/out" "$TMP/err"; }

"$MLRUN" -np 2 --no-tag-output -- "$CKPT_MAKE" "$D" 10 20 >"$TMP/make" 2>&1 ||
	fail "ckpt_make exited $?: $(cat "$TMP/make")"

# ls: newest first, both committed by a world of 2, 4 tensors each.
ckpt ls "$D" || fail "ls exited $?: $(out)"
head -1 "$TMP/out" | grep -q '^STEP  *COMMITTED  *WORLD  *BYTES  *TENSORS  *TIME' || fail "ls header: $(out)"
rows=$(sed 1d "$TMP/out" | awk '{print $1, $2, $3, $5}' | tr '\n' ';')
[ "$rows" = "20 yes 2 4;10 yes 2 4;" ] || fail "ls rows '$rows': $(out)"
bytes=$(awk '$1 == 20 {print $4}' "$TMP/out")
want=$(stat -c %s "$D"/step-20/* | awk '{s += $1} END {print s}')
[ "$bytes" = "$want" ] || fail "ls says step 20 has $bytes bytes, the files hold $want"
grep -Eq '^20 .* [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' "$TMP/out" ||
	fail "ls time not ISO 8601 UTC: $(out)"
echo "ok: ls"

ckpt verify "$D" || fail "verify exited $?: $(out)"
grep -q '^step 20: ok (2 files, [0-9]* bytes)$' "$TMP/out" || fail "verify: $(out)"
grep -q '^step 10: ok (2 files, [0-9]* bytes)$' "$TMP/out" || fail "verify: $(out)"
echo "ok: verify of an intact checkpoint"

# inspect: every tensor with its blocks, and the metadata value.
ckpt inspect "$D" 20 || fail "inspect exited $?: $(out)"
grep -q '^step 20: committed .*, world size 2, 4 tensors$' "$TMP/out" || fail "inspect summary: $(out)"
grep -q '^  rank-1.h5  [0-9]* bytes$' "$TMP/out" || fail "inspect files: $(out)"
grep -Eq '^  layer0/weights +rank +f32 +\[1000\]$' "$TMP/out" || fail "inspect weights: $(out)"
grep -Eq '^  bias +replicated +f64 +\[16\]$' "$TMP/out" || fail "inspect bias: $(out)"
grep -Eq '^  emb +shard +f32 +\[4, 8\]$' "$TMP/out" || fail "inspect emb: $(out)"
grep -q '^    rank-1.h5  block \[2, 8\] at \[2, 0\]  crc32c [0-9a-f]\{8\}  offset [0-9]*  bytes 64$' \
	"$TMP/out" || fail "inspect emb's block on rank 1: $(out)"
grep -q '^  epoch (i64 \[1\]) = 2$' "$TMP/out" || fail "inspect epoch: $(out)"
"$MLRUN" ckpt inspect "$D" 10 | grep -q '^  epoch (i64 \[1\]) = 1$' || fail "epoch of step 10"
echo "ok: inspect"

# Flip one byte in the middle of layer0/weights in step 20's rank-1.h5.
off=$(awk '/^  [^ ]/ {t = $1} t == "layer0/weights" && $1 == "rank-1.h5" {print $9 + 1000}' "$TMP/out")
[ -n "$off" ] || fail "no offset of layer0/weights in rank-1.h5: $(out)"
f=$D/step-20/rank-1.h5
b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
printf "\\$(printf %03o $((b ^ 0xff)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
ckpt verify "$D" && fail "verify passed a flipped byte: $(out)"
[ $? -eq 1 ] || fail "verify of a damaged step: want exit 1: $(out)"
grep -q '^step 20: DAMAGED: .*/step-20/rank-1.h5: tensor layer0/weights fails its CRC32C' "$TMP/out" ||
	fail "verify did not name rank-1.h5 and layer0/weights: $(out)"
grep -q '^step 10: ok ' "$TMP/out" || fail "step 10 should still verify: $(out)"
ckpt verify "$D" 10 || fail "verify $D 10 exited $?: $(out)"
echo "ok: a flipped byte"

# Truncate step 10's rank-0.h5.
truncate -s 4096 "$D/step-10/rank-0.h5"
ckpt verify "$D" 10 && fail "verify passed a truncated file: $(out)"
[ $? -eq 1 ] || fail "verify of a truncated file: want exit 1: $(out)"
grep -q '^step 10: DAMAGED: .*/step-10/rank-0.h5 is 4096 bytes but the manifest says [0-9]* (truncated?)' \
	"$TMP/out" || fail "verify did not say truncated: $(out)"
ckpt inspect "$D" 10 && fail "inspect passed a truncated file: $(out)"
grep -q '^  rank-0.h5  [0-9]* bytes  DAMAGED: 4096 bytes on disk (truncated?)$' "$TMP/out" ||
	fail "inspect did not flag the truncated file: $(out)"
grep -q '^  epoch (i64 \[1\]) = 1$' "$TMP/out" || fail "inspect stopped at the damage: $(out)"
echo "ok: a truncated file"

# A step directory without a manifest: a save that never committed.
mkdir "$D/step-30"
cp "$D/step-20/rank-0.h5" "$D/step-30/"
ckpt ls "$D" || fail "ls exited $?: $(out)"
grep -Eq '^30 +no +- +[0-9]+ +- +-$' "$TMP/out" || fail "ls of an uncommitted step: $(out)"
[ "$(sed -n 2p "$TMP/out" | awk '{print $1}')" = 30 ] || fail "ls not newest first: $(out)"
ckpt verify "$D" 30 && fail "verify passed an uncommitted step: $(out)"
[ $? -eq 1 ] || fail "verify of an uncommitted step: want exit 1"
grep -q '^step 30: not committed (no manifest.h5 in ' "$TMP/out" || fail "verify 30: $(out)"
ckpt verify "$D" && fail "verify of the whole directory passed"
grep -q '^step 30: not committed, skipped$' "$TMP/out" || fail "verify skipped nothing: $(out)"
ckpt inspect "$D" 30 && fail "inspect passed an uncommitted step"
grep -q 'step 30 is not committed' "$TMP/err" || fail "inspect 30: $(out)"
echo "ok: an uncommitted step"

# Missing and empty directories, missing steps.
ckpt ls "$TMP/nope" && fail "ls of a missing directory passed"
[ $? -eq 1 ] || fail "ls of a missing directory: want exit 1"
grep -qx "mlrun ckpt: no such directory $TMP/nope" "$TMP/err" || fail "missing dir: $(out)"
mkdir "$TMP/empty"
ckpt ls "$TMP/empty" || fail "ls of an empty directory exited $?"
grep -q "^no checkpoint steps in $TMP/empty" "$TMP/out" || fail "empty dir: $(out)"
ckpt verify "$D" 99 && fail "verify of a missing step passed"
[ $? -eq 1 ] || fail "verify of a missing step: want exit 1"
grep -q "no step 99 in $D" "$TMP/err" || fail "missing step: $(out)"
echo "ok: missing things"

# Bad usage: exit 2 with the usage text or the word at fault on stderr.
usage_exit() {
	"$MLRUN" ckpt "$@" >"$TMP/out" 2>"$TMP/err"
	local rc=$?
	[ $rc -eq 2 ] || fail "mlrun ckpt $*: want exit 2, got $rc: $(out)"
	[ -s "$TMP/err" ] || fail "mlrun ckpt $*: nothing on stderr"
}
usage_exit
"$MLRUN" ckpt --help >"$TMP/out" 2>"$TMP/err" || fail "mlrun ckpt --help exited non-zero"
grep -q '^usage: mlrun ckpt ls DIR$' "$TMP/out" || fail "--help: $(out)"
usage_exit ls
usage_exit ls "$D" extra
usage_exit verify "$D" ten
grep -q "invalid step 'ten'" "$TMP/err" || fail "bad step: $(out)"
usage_exit inspect "$D"
usage_exit frob "$D"
grep -q "unknown subcommand 'frob'" "$TMP/err" || fail "unknown subcommand: $(out)"
"$MLRUN" --help | grep -q 'mlrun ckpt' || fail "mlrun --help does not mention mlrun ckpt"
echo "ok: usage"
