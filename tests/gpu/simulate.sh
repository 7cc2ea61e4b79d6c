#!/usr/bin/env bash
# Plays the GPU machine here, as far as a machine without a GPU can: runs
# tests/gpu/run.sh in a copy of the tracked files plus build-gpu-bundle/
# (what the device tool sends), in a mount namespace where this machine's
# copies of the libraries the bundle carries (ZeroMQ, msgpack-c, HDF5,
# libisal, jansson..., and cmocka, libyaml) and their pkg-config files are
# hidden under /dev/null, so that only the bundle can supply them.
# Usage: tests/gpu/simulate.sh   (from the repository root, as root, after
#        tests/gpu/bundle.sh; leaves its logs in /tmp/mlrt-gpu-sim.*/)
#
# Checks, each of which must hold: (1) without a bundle, run.sh stops at
# once saying what to do; (2) with the libraries hidden, mlrun from the
# bundle no longer loads without the bundle's lib/; (3) run.sh passes with
# the bundle and its log shows every library found; (4) run.sh
# reports a failing, a hanging and a skipping check as FAIL, TIMEOUT and
# SKIP, and exits 1; (5) with NVIDIA's libraries only in Python wheels'
# folders, run.sh finds them there.
set -euo pipefail

die() {
	echo "simulate: $*" >&2
	exit 1
}
cd "$(dirname "$0")/../.." || die "cannot enter the repository root"
bundle=${MLRT_GPU_BUNDLE:-build-gpu-bundle}
unset MLRT_GPU_BUNDLE # the copy there is always build-gpu-bundle
[ -f "$bundle/manifest.sh" ] || die "no $bundle/: make it first with tests/gpu/bundle.sh"
[ "$(id -u)" -eq 0 ] || die "needs root (unshare -m and mount --bind)"
command -v unshare >/dev/null || die "unshare not found (util-linux)"

sim=$(mktemp -d /tmp/mlrt-gpu-sim.XXXXXX)
mkdir -p "$sim/repo" "$sim/norepo" "$sim/out" "$sim/out-fail"
git ls-files -z | tar --null -T - -cf - | tar -C "$sim/repo" -xf -
git ls-files -z | tar --null -T - -cf - | tar -C "$sim/norepo" -xf -
cp -a "$bundle" "$sim/repo/build-gpu-bundle"

# (4)'s bundle: the real one with three checks more.
cp -a "$bundle" "$sim/repo/build-gpu-bundle-fail"
n=$(sed -n 's/^MANIFEST_COUNT=//p' "$bundle/manifest.sh")
{
	echo "MANIFEST_COUNT=$((n + 3))"
	echo "T_NAME[$n]=sim_fail T_KIND[$n]=test T_SUITE[$n]=gpu T_TIMEOUT[$n]=30 T_WORKDIR[$n]=@MLRT_BUILD@"
	echo "T_CMD_$n=(/bin/sh -c 'echo \"boom: \$MLRUN\"; exit 3')"
	echo "T_ENV_$n=(MLRUN=@MLRT_BUILD@/launcher/mlrun)"
	echo "T_NAME[$((n + 1))]=sim_hang T_KIND[$((n + 1))]=bench T_SUITE[$((n + 1))]=bench T_TIMEOUT[$((n + 1))]=600 T_WORKDIR[$((n + 1))]=@MLRT_SRC@"
	echo "T_CMD_$((n + 1))=(sleep 600)"
	echo "T_ENV_$((n + 1))=()"
	echo "T_NAME[$((n + 2))]=sim_skip T_KIND[$((n + 2))]=test T_SUITE[$((n + 2))]=gpu T_TIMEOUT[$((n + 2))]=30 T_WORKDIR[$((n + 2))]=@MLRT_BUILD@"
	echo "T_CMD_$((n + 2))=(/bin/sh -c 'echo \"skip: no GPU here\" >&2; exit 77')"
	echo "T_ENV_$((n + 2))=()"
} >>"$sim/repo/build-gpu-bundle-fail/manifest.sh"

# The files to hide, in two steps.  First what the GPU machine lacks: the
# named libraries and the pkg-config files of the build dependencies (no
# building there); not libjansson yet, which Debian's ld needs, so that
# meson stops at what the GPU machine lacks and not at a broken linker.
# Then everything else the bundle carries, which is
# harsher than the GPU machine (it has zlib, OpenSSL...) but proves that
# the bundle alone supplies them.
libdirs=(/usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/hdf5/serial /usr/local/lib)
lacking=()
for pat in libzmq libmsgpackc libmsgpack-c libcmocka libyaml libisal libhdf5 libsz libaec; do
	for d in "${libdirs[@]}"; do
		for f in "$d/$pat"*.so*; do [ -e "$f" ] && lacking+=("$(realpath "$f")"); done
	done
done
for pc in libzmq msgpack msgpack-c hdf5 hdf5-serial libisal cmocka jansson yaml-0.1; do
	for d in /usr/lib/x86_64-linux-gnu/pkgconfig /usr/share/pkgconfig /usr/lib/pkgconfig; do
		[ -e "$d/$pc.pc" ] && lacking+=("$(realpath "$d/$pc.pc")")
	done
done
carried=()
for so in "$bundle"/lib/* libjansson.so libyaml-0.so libcmocka.so; do
	for d in "${libdirs[@]}"; do
		for f in "$d/${so##*/}"*; do [ -e "$f" ] && carried+=("$(realpath "$f")"); done
	done
done
mapfile -t lacking < <(printf '%s\n' "${lacking[@]}" | sort -u)
mapfile -t carried < <(comm -23 <(printf '%s\n' "${carried[@]}" | sort -u) <(printf '%s\n' "${lacking[@]}"))
printf '%s\n' "${lacking[@]}" >"$sim/hidden-lacking.txt"
printf '%s\n' "${carried[@]}" >"$sim/hidden-carried.txt"
echo "simulate: hiding ${#lacking[@]} + ${#carried[@]} files (lists: $sim/hidden-*.txt), running in $sim"

export SIM=$sim
status=0
timeout 900 unshare -m --propagation private bash -s <<'EOF' || status=$?
set -uo pipefail
hide() {
	local f
	while IFS= read -r f; do
		mount --bind /dev/null "$f" || { echo "simulate: cannot hide $f" >&2; exit 1; }
	done <"$1"
}
status=0
check() { echo "simulate: ($1) $2: $3"; [ "$3" = ok ] || status=1; }

hide "$SIM/hidden-lacking.txt"
(cd "$SIM/norepo" && OUT=$SIM/out-nobundle timeout 120 bash tests/gpu/run.sh) >"$SIM/nobundle.txt" 2>&1
rc=$?
grep -m1 'ERROR' "$SIM/nobundle.txt"
tail -2 "$SIM/nobundle.txt"
if [ $rc -eq 1 ] && grep -q 'tests/gpu/bundle.sh' "$SIM/nobundle.txt"; then
	check 1 "run.sh without a bundle stops, saying to make one" ok
else
	check 1 "run.sh without a bundle" "FAILED (exit $rc; $SIM/nobundle.txt)"
fi

hide "$SIM/hidden-carried.txt"

mlrun=$SIM/repo/build-gpu-bundle/build/launcher/mlrun
if env -u LD_LIBRARY_PATH "$mlrun" --version >"$SIM/noload.txt" 2>&1; then
	check 2 "mlrun without the bundle's lib/" "FAILED: it still loads, so the hiding does not work"
else
	check 2 "mlrun without the bundle's lib/ does not load ($(sed -n '1s/.*shared libraries: //p' "$SIM/noload.txt"))" ok
fi

(cd "$SIM/repo" && OUT=$SIM/out timeout 400 bash tests/gpu/run.sh) >"$SIM/run.txt" 2>&1
rc=$?
cat "$SIM/run.txt"
if [ $rc -eq 0 ] && grep -q ', 0 not found, 0 load errors$' "$SIM/out/gpu-run.log" &&
	grep -q '^PASS *test *devices ' "$SIM/out/gpu-run.log"; then
	check 3 "run.sh with the bundle, libraries hidden" ok
else
	check 3 "run.sh with the bundle, libraries hidden" "FAILED (exit $rc; $SIM/out/gpu-run.log)"
fi

(cd "$SIM/repo" && OUT=$SIM/out-fail MLRT_GPU_BUNDLE=build-gpu-bundle-fail MLRT_GPU_TEST_TIMEOUT_S=5 \
	timeout 200 bash tests/gpu/run.sh) >"$SIM/fail.txt" 2>&1
rc=$?
sed -n '/^== summary/,$p' "$SIM/fail.txt"
if [ $rc -eq 1 ] && grep -q '^FAIL *test *sim_fail .*exit 3: boom: /' "$SIM/fail.txt" &&
	grep -q '^TIMEOUT *bench *sim_hang ' "$SIM/fail.txt" && grep -q '^SKIP *test *sim_skip .*skip: no GPU here' "$SIM/fail.txt"; then
	check 4 "a failing, a hanging and a skipping check: FAIL, TIMEOUT, SKIP, exit 1" ok
else
	check 4 "failing, hanging and skipping checks" "FAILED (exit $rc; $SIM/fail.txt)"
fi

# (5) NVIDIA's libraries off the loader's path, only in Python wheels'
# folders (as in an image where PyTorch brought them: nvidia/<pkg>/lib):
# run.sh must find them there.
site=/opt/sim/.venv/lib/python3.12/site-packages/nvidia
cudart=$(LD_LIBRARY_PATH=$SIM/repo/build-gpu-bundle/lib ldd "$mlrun" 2>/dev/null | awk '$1 == "libcudart.so.13" { print $3 }')
if [ -n "$cudart" ]; then
	libdir=$(dirname "$(realpath "$cudart")")
	mount -t tmpfs sim-opt /opt || { echo "simulate: cannot mount /opt" >&2; exit 1; }
	for pair in cuda_runtime:libcudart.so.13 nccl:libnccl.so.2 cublas:libcublas.so.13 \
		cublas:libcublasLt.so.13; do
		mkdir -p "$site/${pair%%:*}/lib" && cp -L "$libdir/${pair#*:}" "$site/${pair%%:*}/lib/" ||
			{ echo "simulate: cannot copy ${pair#*:}" >&2; exit 1; }
	done
	mount -t tmpfs sim-cuda "$libdir" && mount -t tmpfs sim-local /usr/local/lib ||
		{ echo "simulate: cannot hide $libdir" >&2; exit 1; }
	(cd "$SIM/repo" && OUT=$SIM/out-wheel timeout 400 bash tests/gpu/run.sh) >"$SIM/wheel.txt" 2>&1
	rc=$?
	grep -E 'libcudart|libnccl' "$SIM/wheel.txt" | cut -c1-150
	if [ $rc -eq 0 ] && grep -q "libcudart.so.13 from $site/cuda_runtime/lib" "$SIM/wheel.txt"; then
		check 5 "NVIDIA's libraries only in wheels' folders: found there, checks pass" ok
	else
		check 5 "NVIDIA's libraries only in wheels' folders" "FAILED (exit $rc; $SIM/wheel.txt)"
	fi
fi
exit $status
EOF
# The copies take room; the logs stay.
rm -rf "$sim/repo" "$sim/norepo"
echo "simulate: $([ $status -eq 0 ] && echo "all checks hold" || echo "FAILED"); logs in $sim"
exit $status
