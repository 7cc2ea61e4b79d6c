# A save that fills the filesystem fails cleanly (MLRT_ERR_NOSPACE on every
# rank, nothing half-written left), and the previous step still restores.
# Needs root to mount a small tmpfs.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "skip: mounting a small tmpfs needs root"
	exit 77
fi
mkdir "$TMP/fs"
mount -t tmpfs -o size=8m mlrt-test "$TMP/fs" || { echo "skip: cannot mount a tmpfs here"; exit 77; }
cleanup_hooks+=("umount -l '$TMP/fs'")

for mode in sync async; do
	rm -rf "$TMP/fs/ck"
	"$MLRUN" -np 2 --no-tag-output "$CKPT_CHECK" enospc "$TMP/fs/ck" "$mode" \
		>"$TMP/out" 2>"$TMP/err" || fail "$mode: $(cat "$TMP/err")"
	[ "$(grep -c '^enospc: rank [01] ok$' "$TMP/out")" -eq 2 ] || fail "$mode: $(cat "$TMP/out")"
	grep -q 'cannot write .*/step-2/rank-[01].h5.*No space left on device' "$TMP/err" ||
		fail "$mode: no message naming the file and the cause: $(cat "$TMP/err")"
	grep -q 'step 2 was not saved .*step 1 in .* is intact' "$TMP/err" ||
		fail "$mode: no message saying step 1 is intact: $(cat "$TMP/err")"
	[ ! -e "$TMP/fs/ck/step-2" ] || fail "$mode: step-2 left behind: $(ls -R "$TMP/fs/ck")"
	leftovers=$(find "$TMP/fs/ck" -name '*.tmp')
	[ -z "$leftovers" ] || fail "$mode: temporary files left: $leftovers"
	echo "$mode: ok"
done
