#!/usr/bin/env bash
# Makes build-gpu-bundle/: mlrt built with CUDA here, with the libraries it
# needs, for tests/gpu/run.sh on a GPU machine that cannot build it (no
# ZeroMQ, msgpack-c, libisal... and no package registry).  docs/gpu.md.
# Usage: tests/gpu/bundle.sh   (from the repository root; then carry
#        build-gpu-bundle to the GPU machine and run tests/gpu/run.sh there)
#
# Steps: configure and build build-gpu (CUDA on; MPI, libfabric and etcd
# off, so that the bundle depends on none of their versions); list the
# checks to run (tests/gpu/manifest.py: the 'devices' test, suite 'gpu',
# benchmarks gpu_*); copy the executables and libmlrt, stripped, keeping
# their places in the build tree; copy every shared library they load
# except the C runtime's and those of the NVIDIA driver and CUDA, which the
# GPU machine has; check that the copies load from the bundle alone; check
# the size against the device tool's 64 MiB.
#
# Environment: JOBS (parallel compile jobs, default 2), MLRT_GPU_BUILD
# (default build-gpu), MLRT_GPU_BUNDLE (default build-gpu-bundle).
set -euo pipefail

die() {
	echo "bundle: $*" >&2
	exit 1
}

cd "$(dirname "$0")/../.." || die "cannot enter the repository root"
[ -f meson.build ] && [ -f tests/gpu/manifest.py ] || die "run from an mlrt checkout"
for tool in meson ninja python3 ldd readelf objdump strip timeout od; do
	command -v "$tool" >/dev/null ||
		die "$tool not found: install the build dependencies (scripts/install-deps) and binutils"
done

build=${MLRT_GPU_BUILD:-build-gpu}
bundle=${MLRT_GPU_BUNDLE:-build-gpu-bundle}
jobs=${JOBS:-2}
case "$bundle" in
build*) ;;
*) die "MLRT_GPU_BUNDLE=$bundle: the name must start with 'build' (ignored by .gitignore)" ;;
esac

# Libraries the GPU machine supplies itself: the C runtime (glibc's
# libraries must all come from the one glibc, libresolv and libutil too),
# the C++ runtime (newer there), the NVIDIA driver's, and CUDA's and NCCL's
# (same CUDA 13 and NCCL 2.28 there).  Everything else travels.
system_libs='^(linux-vdso|linux-gate|ld-linux[^ ]*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libBrokenLocale|libthread_db|libnss_[a-z0-9]+|libstdc\+\+|libgcc_s|libcuda|libcudart|libnccl|libcublas|libcublasLt|libnvidia-[a-z0-9-]+)\.so'

opts=(-Dcuda=enabled -Dmpi=disabled -Dofi=disabled -Detcd=disabled -Dtests=enabled)
if [ -f "$build/build.ninja" ]; then
	echo "bundle: reconfiguring $build (${opts[*]})"
	timeout 300 meson configure "$build" "${opts[@]}" >/dev/null ||
		die "meson configure $build failed (see above); remove $build and run again"
else
	echo "bundle: configuring $build (${opts[*]})"
	timeout 300 meson setup "$build" "${opts[@]}" >"$build.setup.log" 2>&1 || {
		tail -20 "$build.setup.log" >&2
		die "meson setup $build failed (log: $build.setup.log): CUDA, NCCL or cmocka missing? scripts/install-deps installs the Debian packages"
	}
	rm -f "$build.setup.log"
fi
echo "bundle: compiling $build with $jobs jobs"
timeout 1800 meson compile -C "$build" -j "$jobs" >"$build/bundle-compile.log" 2>&1 || {
	tail -30 "$build/bundle-compile.log" >&2
	die "meson compile -C $build failed (log: $build/bundle-compile.log)"
}

tmp=$bundle.tmp
rm -rf "$tmp"
mkdir -p "$tmp/build" "$tmp/lib"
timeout 120 python3 tests/gpu/manifest.py "$build" . "$tmp" || die "cannot list the checks of $build"

is_elf() { [ "$(od -An -N4 -c "$1" 2>/dev/null | tr -d ' ')" = '177ELF' ]; }

# What to copy from the build tree: every executable and shared library
# (objects and static archives stay behind) except the cmocka unit tests
# and the fake GPU stack with the programs built on it (tests/gpu/fake,
# tests/gpu/emu), which do not run there; and whatever file a kept check
# names.
files=()
while IFS= read -r f; do
	f=${f#./}
	case "$f" in
	*.o | *.a | tests/test_* | tests/gpu/fake/* | tests/gpu/emu/*) continue ;;
	esac
	is_elf "$build/$f" && files+=("$f")
done < <(cd "$build" && find . \( -name '*.p' -o -name 'meson-*' \) -prune -o -type f -perm -u+x -print | sort)
dirs=()
while IFS= read -r f; do
	case "$f" in
	*/) dirs+=("${f%/}") ;;
	*) [[ " ${files[*]} " == *" $f "* ]] || files+=("$f") ;;
	esac
done <"$tmp/build-files"
files+=(mlrt_config.h)

declare -A libs=() # soname -> path here
elf_copies=()
for f in "${files[@]}"; do
	src="$build/$f"
	dst="$tmp/build/$f"
	if is_elf "$src"; then
		# A shared library goes by its soname, the name the loader asks for.
		soname=$(readelf -d "$src" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
		[ -n "$soname" ] && dst="$tmp/build/$(dirname "$f")/$soname"
		mkdir -p "$(dirname "$dst")"
		cp -L "$src" "$dst"
		strip --strip-unneeded "$dst" || die "strip $dst failed"
		# GPU code (.nv_fatbin) is an allocated section that strip keeps;
		# make sure, since without it every kernel launch would fail there.
		for sec in $(readelf -SW "$src" | grep -o '\.nv_fatbin\|__nv_relfatbin' | sort -u); do
			readelf -SW "$dst" | grep -q -- "$sec" || die "strip removed $sec from $dst"
		done
		elf_copies+=("$dst")
		ldd_out=$(LD_LIBRARY_PATH=$build timeout 30 ldd "$src") || die "ldd $src failed"
		if grep -q 'not found' <<<"$ldd_out"; then
			die "$src: $(grep 'not found' <<<"$ldd_out" | tr -s '\t\n' '  '): the build cannot load here"
		fi
		while read -r name arrow path _; do
			[ "$arrow" = '=>' ] || continue
			[[ "$name" =~ $system_libs ]] && continue
			case "$(realpath "$path")" in
			"$(realpath "$build")"/*) continue ;; # libmlrt, copied above
			esac
			libs[$name]=$path
		done <<<"$ldd_out"
	else
		mkdir -p "$(dirname "$dst")"
		cp -L "$src" "$dst"
	fi
done

# A folder a check names (data it reads, say) travels whole, but for
# objects, which only the compiler needs.
for d in "${dirs[@]}"; do
	mkdir -p "$tmp/build/$d"
	(cd "$build/$d" && find . -name '*.p' -prune -o -type f ! -name '*.o' -print0 |
		xargs -0 -r cp -L --parents -t "$(realpath "$OLDPWD/$tmp/build/$d")") ||
		die "cannot copy $build/$d"
done

for name in "${!libs[@]}"; do
	cp -L "${libs[$name]}" "$tmp/lib/$name"
	chmod u+w "$tmp/lib/$name"
	strip --strip-unneeded "$tmp/lib/$name" 2>/dev/null || true
done

# The copies must load from the bundle and the excluded libraries alone:
# ldd them with the bundle's lib first and list where each library came from.
unresolved=0
: >"$tmp/ldd.txt"
for f in "${elf_copies[@]}" "$tmp"/lib/*; do
	out=$(LD_LIBRARY_PATH=$tmp/lib:$(dirname "$f") timeout 30 ldd "$f" 2>&1) || true
	printf '%s:\n%s\n' "${f#"$tmp"/}" "$out" >>"$tmp/ldd.txt"
	if grep -q 'not found' <<<"$out"; then
		echo "bundle: ${f#"$tmp"/}: $(grep 'not found' <<<"$out" | tr -s '\t\n' '  ')" >&2
		unresolved=1
	fi
done
[ $unresolved -eq 0 ] || die "copies in $tmp do not load (above)"
"$tmp/build/launcher/mlrun" --version >/dev/null 2>&1 ||
	LD_LIBRARY_PATH=$tmp/lib "$tmp/build/launcher/mlrun" --version >/dev/null ||
	die "the stripped mlrun in $tmp does not run"

# The newest glibc symbol version anything needs: run.sh refuses a machine
# with an older glibc with that message instead of a loader error.
glibc_needed=$(for f in "${elf_copies[@]}" "$tmp"/lib/*; do objdump -T "$f"; done 2>/dev/null |
	grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

{
	echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) ($(. /etc/os-release && echo "$PRETTY_NAME"), $(getconf GNU_LIBC_VERSION))"
	echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "options: ${opts[*]}"
	echo "glibc_needed: $glibc_needed"
	echo "checks: $(sed -n 's/^T_NAME\[[0-9]*\]=\([^ ]*\) .*/\1/p' "$tmp/manifest.sh" | tr '\n' ' ')"
	echo "from the GPU machine: the C and C++ runtimes, the NVIDIA driver, CUDA runtime, NCCL, cuBLAS"
	echo "carried libraries (lib/), each from:"
	for name in $(printf '%s\n' "${!libs[@]}" | sort); do
		real=$(realpath "${libs[$name]}")
		pkg=
		for p in "$real" "/lib/x86_64-linux-gnu/${real##*/}" "/usr/lib/x86_64-linux-gnu/${real##*/}"; do
			pkg=$(timeout 10 dpkg -S "$p" 2>/dev/null | cut -d: -f1 | head -1) || true
			[ -z "$pkg" ] || break
		done
		echo "  $name  ${libs[$name]}  ${pkg:-?}"
	done
} >"$tmp/BUNDLE_INFO"
echo "glibc_needed=$glibc_needed" >"$tmp/bundle.env"
# What the bundle was made from, for run.sh to compare with the copy there.
{ git ls-files -z | xargs -0 sha256sum 2>/dev/null || true; } >"$tmp/sources.sha256"
[ -s "$tmp/sources.sha256" ] || die "cannot list the tracked files (git ls-files)"

rm -rf "$bundle"
mv "$tmp" "$bundle"

# The device tool carries 64 MiB in all: the bundle and the tracked files.
bundle_b=$(du -sb "$bundle" | cut -f1)
tree_b=$(git ls-files -z 2>/dev/null | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1 || echo 0)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "bundle: $bundle: $(find "$bundle/build" -type f | wc -l) build files${dirs[*]:+ (folders ${dirs[*]})}, ${#libs[@]} libraries, $(mib "$bundle_b")" \
	"(+ $(mib "${tree_b:-0}") of tracked files = $(mib $((bundle_b + ${tree_b:-0}))) of the device tool's 64 MiB)"
sed -n 's/^checks: /bundle: checks: /p' "$bundle/BUNDLE_INFO"
[ $((bundle_b + ${tree_b:-0})) -le $((64 * 1048576)) ] ||
	die "$bundle and the tracked files exceed the 64 MiB the device tool carries: leave something out"
