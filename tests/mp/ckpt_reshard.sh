# Sharded tensors saved by 4 ranks restore exactly on 2 ranks (column
# blocks), 3 and 5 ranks (other row blocks); a per-rank tensor refuses a
# larger world.  h5dump reads the files.
. "$(dirname "$0")/lib.sh"

run() {
	"$MLRUN" -np "$1" --no-tag-output "$CKPT_CHECK" "$2" "$TMP/ck" >"$TMP/out" 2>"$TMP/err" ||
		fail "$2 on $1 ranks: $(cat "$TMP/err")"
	[ "$(grep -c "^$2: rank [0-9]* ok$" "$TMP/out")" -eq "$1" ] ||
		fail "$2 on $1 ranks: $(cat "$TMP/out" "$TMP/err")"
	echo "$2 on $1 ranks: ok"
}

run 4 shard-save
for f in manifest rank-0 rank-1 rank-2 rank-3; do
	[ -f "$TMP/ck/step-3/$f.h5" ] || fail "missing step-3/$f.h5"
done
run 2 shard-restore
run 3 shard-restore
run 5 shard-restore
grep -q "tensor mine does not match step 3 .*per-rank" "$TMP/err" ||
	fail "no message about the per-rank tensor: $(cat "$TMP/err")"

# h5dump reads a rank file and the manifest, with the tensors' attributes.
command -v h5dump >/dev/null || fail "h5dump is not installed (Debian package hdf5-tools)"
h5dump -A "$TMP/ck/step-3/rank-2.h5" >"$TMP/dump" || fail "h5dump cannot read rank-2.h5"
for want in 'DATASET "grid"' 'DATASET "line"' 'ATTRIBUTE "crc32c"' 'ATTRIBUTE "global_shape"'; do
	grep -q "$want" "$TMP/dump" || fail "h5dump shows no $want: $(head -50 "$TMP/dump")"
done
h5dump -d /grid "$TMP/ck/step-3/rank-0.h5" | grep -q '(0,0): 0.5, 1.5, 2.5, 3.5, 4.5' ||
	fail "h5dump shows other values for grid: $(h5dump -d /grid "$TMP/ck/step-3/rank-0.h5" | head -30)"
h5dump "$TMP/ck/step-3/manifest.h5" >"$TMP/dump" || fail "h5dump cannot read the manifest"
grep -q '"rank-3.h5"' "$TMP/dump" && grep -q '"epoch"' "$TMP/dump" ||
	fail "the manifest lacks files or metadata: $(head -80 "$TMP/dump")"
echo "h5dump: ok"
