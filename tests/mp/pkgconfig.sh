# A program outside the tree builds with `pkg-config --cflags --libs mlrt`,
# against the uninstalled build and after `meson install`, and runs under
# mlrun.
. "$(dirname "$0")/lib.sh"

cc=${CC:-cc}
src="$MESON_SOURCE_ROOT/examples/hello.c"

PKG_CONFIG_PATH="$MESON_BUILD_ROOT/meson-uninstalled" pkg-config --exists mlrt ||
	fail "mlrt-uninstalled.pc not found"
# shellcheck disable=SC2046
$cc -o "$TMP/hello-uninst" "$src" \
	$(PKG_CONFIG_PATH="$MESON_BUILD_ROOT/meson-uninstalled" pkg-config --cflags --libs mlrt) ||
	fail "build against the uninstalled tree failed"
libdir=$(PKG_CONFIG_PATH="$MESON_BUILD_ROOT/meson-uninstalled" pkg-config --libs-only-L mlrt | sed 's/^ *-L//; s/ .*//')
LD_LIBRARY_PATH="$libdir" "$MLRUN" -np 3 --no-tag-output "$TMP/hello-uninst" >"$TMP/out" 2>"$TMP/err" ||
	fail "uninstalled hello failed: $(cat "$TMP/err")"
grep -q 'all 3 ranks passed the barrier' "$TMP/out" || fail "output: $(cat "$TMP/out")"

dest="$TMP/dest"
meson install -C "$MESON_BUILD_ROOT" --destdir "$dest" --no-rebuild >"$TMP/install.log" 2>&1 ||
	fail "meson install failed: $(cat "$TMP/install.log")"
pc=$(find "$dest" -name mlrt.pc | head -n 1)
[ -n "$pc" ] || fail "no mlrt.pc installed"
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$dest"
# shellcheck disable=SC2046
$cc -o "$TMP/hello-inst" "$src" $(pkg-config --cflags --libs mlrt) ||
	fail "build against the installed tree failed"
LD_LIBRARY_PATH="$dest$(pkg-config --variable=libdir mlrt | sed "s|^$dest||")" \
	"$dest$(pkg-config --variable=prefix mlrt | sed "s|^$dest||")/bin/mlrun" -np 2 --no-tag-output \
	"$TMP/hello-inst" >"$TMP/out2" 2>"$TMP/err2" || fail "installed hello failed: $(cat "$TMP/err2")"
grep -q 'all 2 ranks passed the barrier' "$TMP/out2" || fail "output: $(cat "$TMP/out2")"
echo "ok"
