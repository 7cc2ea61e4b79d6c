#!/usr/bin/env bash
# The checks that need a GPU, in one go, for a machine lent with one
# (docs/gpu.md): the 'devices' test, every test of suite 'gpu' and every
# benchmark named gpu_*, each under a timeout and all within a budget, after
# the machine's inventory (mlrun devices, --json, nvidia-smi).
#
# Usage: bash tests/gpu/run.sh   (from the repository root; on the GPU
#        machine with build-gpu-bundle/ carried, made here first by
#        tests/gpu/bundle.sh, or `bash tests/gpu/run.sh --bundle`); through
#        the device tool: run(command: "bash tests/gpu/run.sh",
#        carry: ["build-gpu-bundle"], timeout_s: 400)
#
# With build-gpu-bundle/ (manifest.sh, build/, lib/) it runs what the bundle
# holds, its lib/ first on LD_LIBRARY_PATH; without one (or with --build) it
# builds build-gpu here, which needs every build dependency.  Writes
# gpu-run.log (everything), summary.tsv and devices.json to $OUT when set
# (the device tool brings $OUT back), else to build-gpu-log/.  Exits 0 when
# every check passed or skipped (77), 1 when one failed, timed out or was
# not reached within the budget, 2 on a usage error.  Where nvidia-smi -L
# lists a GPU, a skip is a failure ("skipped although nvidia-smi lists a
# GPU"), and so is mlrun devices finding none (a row of its own).
#
# Environment: MLRT_GPU_BUDGET_S (whole run, default 360),
# MLRT_GPU_TEST_TIMEOUT_S (one check at most, default 180; less when
# meson's timeout is less), MLRT_GPU_ONLY (names of the checks to run,
# separated by commas or spaces, for a second try at what failed; default
# all), MLRT_GPU_BUNDLE (default build-gpu-bundle).
set -euo pipefail

start=$SECONDS
budget=${MLRT_GPU_BUDGET_S:-360}
only=" ${MLRT_GPU_ONLY:-} "; only=${only//,/ }
test_cap=${MLRT_GPU_TEST_TIMEOUT_S:-180}
bundle=${MLRT_GPU_BUNDLE:-build-gpu-bundle}
mode=auto
case "${1:-}" in
'') ;;
--bundle) exec bash "$(dirname "$0")/bundle.sh" ;;
--build) mode=build ;;
-h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "run.sh: unknown argument '$1' (try --help)" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/../.." || {
	echo "run.sh: cannot enter the repository root" >&2
	exit 1
}
root=$PWD
logdir=${OUT:-$root/build-gpu-log}
mkdir -p "$logdir"
log=$logdir/gpu-run.log
summary=$logdir/summary.tsv
: >"$log"
work=$(mktemp -d /tmp/mlrt-gpu-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

# say: to the terminal and the log; note: to the log alone.
say() { printf '%s\n' "$*" | tee -a "$log"; }
note() { printf '%s\n' "$*" >>"$log"; }
die() {
	say "run.sh: $*"
	say "run.sh: log: $log"
	exit 1
}
left() { echo $((budget - (SECONDS - start))); }
# bounded SECONDS CMD...: CMD under timeout, at most what the budget has left.
bounded() {
	local t=$1 l
	shift
	l=$(($(left) - 5))
	[ "$l" -lt "$t" ] && t=$l
	[ "$t" -ge 1 ] || return 124
	timeout -k 5 "$t" "$@"
}
is_elf() { [ "$(od -An -N4 -c "$1" 2>/dev/null | tr -d ' ')" = '177ELF' ]; }

for tool in timeout od ldd sed awk; do
	command -v "$tool" >/dev/null || die "$tool not found: this script needs coreutils, sed, gawk/mawk and ldd"
done

say "== mlrt GPU checks, $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${budget} s, ${test_cap} s a check at most"
say "host $(hostname): $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(getconf GNU_LIBC_VERSION 2>/dev/null); $(nproc) cores; $(awk '/MemTotal/ { printf "%d GiB", $2 / 1048576 }' /proc/meminfo)"

# ---- What to run, and from where --------------------------------------------
libpath=
if [ "$mode" = auto ] && [ -f "$bundle/manifest.sh" ]; then
	build=$root/$bundle/build
	manifest=$root/$bundle/manifest.sh
	libpath=$root/$bundle/lib
	[ -d "$build" ] && [ -d "$libpath" ] || die "$bundle is incomplete (no build/ or lib/): make it again with tests/gpu/bundle.sh"
	say "bundle: $bundle ($(du -sh "$bundle" | cut -f1))"
	sed -n 's/^\(made\|commit\|checks\): /  \1: /p' "$bundle/BUNDLE_INFO" | tee -a "$log"
	note "$(cat "$bundle/BUNDLE_INFO")"
	# The sources here against those the bundle was made from (the scripts
	# that run the checks must match the programs).
	if [ -f "$bundle/sources.sha256" ]; then
		changed=$(sha256sum --quiet -c "$bundle/sources.sha256" 2>/dev/null | sed -n 's/: FAILED.*//p' | tr '\n' ' ') || true
		if [ -n "$changed" ]; then
			say "warning: files changed since the bundle was made (make it again: tests/gpu/bundle.sh): $changed"
		else
			say "  sources: as when the bundle was made ($(wc -l <"$bundle/sources.sha256") files)"
		fi
	fi
	glibc_needed=$(sed -n 's/^glibc_needed=//p' "$bundle/bundle.env")
	glibc_here=$(getconf GNU_LIBC_VERSION | awk '{ print $2 }')
	if [ -n "$glibc_needed" ] && [ "$(printf '%s\n%s\n' "$glibc_needed" "$glibc_here" | sort -V | head -1)" != "$glibc_needed" ]; then
		die "the bundle needs glibc $glibc_needed and this machine has $glibc_here: make the bundle on an older distribution"
	fi
else
	[ "$mode" = build ] || say "no bundle at $bundle/: building build-gpu here (needs every build dependency)"
	for tool in meson ninja python3; do
		command -v "$tool" >/dev/null ||
			die "$tool not found and no bundle: make the bundle where mlrt builds (tests/gpu/bundle.sh) and carry $bundle (docs/gpu.md)"
	done
	build=$root/build-gpu
	opts=(-Dcuda=enabled -Dmpi=disabled -Dofi=disabled -Detcd=disabled -Dtests=enabled)
	if [ -f build-gpu/build.ninja ]; then
		bounded 120 meson configure build-gpu "${opts[@]}" >>"$log" 2>&1 || die "meson configure build-gpu failed (log)"
	else
		bounded 120 meson setup build-gpu "${opts[@]}" >>"$log" 2>&1 || {
			tail -15 "$log"
			die "cannot configure build-gpu here (above): make the bundle where mlrt builds (tests/gpu/bundle.sh) and carry $bundle (docs/gpu.md)"
		}
	fi
	bounded 240 meson compile -C build-gpu -j "$(nproc)" >>"$log" 2>&1 || {
		tail -30 "$log"
		die "meson compile -C build-gpu failed or ran out of time (above)"
	}
	bounded 60 python3 tests/gpu/manifest.py build-gpu . "$work" >>"$log" || die "cannot list the checks of build-gpu"
	manifest=$work/manifest.sh
fi
say "build: $build"

# ---- Libraries ----------------------------------------------------------------
# The bundle brings everything but the C runtime and NVIDIA's libraries. If
# the loader cannot find one of those (CUDA outside the system path, or
# only in a Python wheel), look where CUDA and the nvidia-* wheels keep them.
ld_before=${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH=${libpath}${LD_LIBRARY_PATH:+${libpath:+:}$LD_LIBRARY_PATH}
elves=()
while IFS= read -r f; do is_elf "$f" && elves+=("$f"); done < <(find "$build" \( -name '*.p' -o -name 'meson-*' \) -prune -o -type f -perm -u+x -print -o -type f -name '*.so*' -print | sort)
[ ${#elves[@]} -gt 0 ] || die "no executables under $build"
# The driver's libraries are loaded with dlopen (runtime/device.c), so ldd
# does not see them: ask the loader's cache and LD_LIBRARY_PATH.
dlopened=(libcuda.so.1 libnvidia-ml.so.1)
findable() {
	local d
	# Not `ldconfig -p | grep -q`: grep stops at the first match, and
	# under pipefail ldconfig's SIGPIPE would then fail the pipeline.
	grep -q "^[[:space:]]*$1 " < <(ldconfig -p 2>/dev/null) && return 0
	for d in ${LD_LIBRARY_PATH//:/ }; do [ -e "$d/$1" ] && return 0; done
	return 1
}
missing() {
	local f so
	for f in "${elves[@]}"; do
		timeout 30 ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 == "not" && $4 == "found" { print $1 }'
	done | sort -u
	for so in "${dlopened[@]}"; do findable "$so" || echo "$so"; done
}
lost=$(missing)
if [ -n "$lost" ]; then
	note "not found at first: $(tr '\n' ' ' <<<"$lost")"
	dirs=(/usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib
		/usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/wsl/lib)
	for d in /usr/local/cuda-*/lib64 /usr/lib/python3*/*-packages/nvidia/*/lib /usr/local/lib/python3*/*-packages/nvidia/*/lib \
		/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib /opt/*/lib/python3*/site-packages/nvidia/*/lib; do
		[ -d "$d" ] && dirs+=("$d")
	done
	for so in $lost; do
		for d in "${dirs[@]}"; do
			if [ -e "$d/$so" ]; then
				case ":$LD_LIBRARY_PATH:" in *":$d:"*) ;; *) LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d ;; esac
				say "libraries: $so from $d (not on the loader's path)"
				break
			fi
		done
	done
	LD_LIBRARY_PATH=${LD_LIBRARY_PATH#:}
	export LD_LIBRARY_PATH
	lost=$(missing)
fi
# Where each library comes from, for the log: the bundle or this machine.
# A library found but not loadable (wrong version, a broken file) shows in
# ldd as an error line rather than 'not found'.
declare -A from=()
load_errors=()
for f in "${elves[@]}"; do
	out=$(timeout 30 ldd "$f" 2>&1) || true
	note "ldd ${f#"$root"/}:"
	note "$out"
	while IFS= read -r line; do
		load_errors+=("${line#"$f": }")
	done < <(grep -i "error\|version \`\|not a dynamic\|too short" <<<"$out" || true)
	while read -r name arrow path _; do
		[ "$arrow" = '=>' ] && [ "${path:0:1}" = / ] || continue
		from[$name]=$path
	done <<<"$out"
done
ours=() theirs=()
for name in $(printf '%s\n' "${!from[@]}" | sort); do
	case "${from[$name]}" in
	"$root"/*) ours+=("$name") ;;
	*) theirs+=("$name (${from[$name]%/*})") ;;
	esac
done
lost_driver=() lost_link=()
for so in $lost; do
	case " ${dlopened[*]} " in
	*" $so "*) lost_driver+=("$so") ;;
	*) lost_link+=("$so") ;;
	esac
done
say "libraries of ${#elves[@]} programs: ${#ours[@]} from $([ -n "$libpath" ] && echo "the bundle" || echo "the build"), ${#theirs[@]} from this machine, ${#lost_link[@]} not found, ${#load_errors[@]} load errors"
say "  from $([ -n "$libpath" ] && echo "the bundle" || echo "the build"): ${ours[*]:-none}"
say "  from this machine: ${theirs[*]:-none}"
note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
[ ${#lost_link[@]} -eq 0 ] ||
	say "  NOT FOUND: ${lost_link[*]}: the programs that need them cannot start; add their folder to LD_LIBRARY_PATH"
[ ${#load_errors[@]} -eq 0 ] ||
	printf '%s\n' "${load_errors[@]}" | sort | uniq -c | while read -r n e; do say "  LOAD ERROR ($n programs): $e"; done
if [ ${#lost_driver[@]} -eq 0 ]; then
	say "  NVIDIA driver (dlopen): ${dlopened[*]} found"
else
	say "  NVIDIA driver (dlopen): ${lost_driver[*]} not found: no driver here, or add its folder to LD_LIBRARY_PATH"
fi

# The tests' own tools (python3, ps...) run with the bundle's libraries
# first on the path; say so if one of them no longer loads.
broken=()
for t in "python3 -c 'import json, hashlib, ctypes, zlib'" 'ps -o pid= -p $$' hostname 'sh -c true'; do
	bounded 20 bash -c "$t" >/dev/null 2>"$work/tool.err" ||
		broken+=("$t: $(head -c 300 "$work/tool.err" | tr '\n' ' ')")
done
if [ ${#broken[@]} -gt 0 ]; then
	for b in "${broken[@]}"; do say "warning: with LD_LIBRARY_PATH=$LD_LIBRARY_PATH: $b"; done
else
	say "system tools (python3, ps, hostname, sh) load with that LD_LIBRARY_PATH"
fi

# ---- Inventory --------------------------------------------------------------
results=() # "RESULT<TAB>kind<TAB>name<TAB>seconds<TAB>note"
# Each result goes to summary.tsv at once: a run stopped from outside
# still leaves what it had.
printf 'result\tkind\tname\tseconds\tnote\n' >"$summary"
record() {
	results+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"$'\t'"$5")
	printf '%s\n' "${results[-1]}" >>"$summary"
}
inventory_rc=0 # the exit status of the last inventory step
inventory() { # inventory NAME FILE CMD...: run CMD, show and log its output
	local name=$1 file=$2 rc=0 t0=$SECONDS
	shift 2
	say "== $name"
	bounded 30 "$@" >"$file" 2>&1 || rc=$?
	tee -a "$log" <"$file"
	inventory_rc=$rc
	if [ $rc -eq 0 ]; then
		record PASS inventory "$name" $((SECONDS - t0)) ""
	else
		say "$name: exit status $rc"
		record FAIL inventory "$name" $((SECONDS - t0)) "exit $rc: $(grep . "$file" | tail -1 | cut -c1-60)"
	fi
}
# smi ARGS...: nvidia-smi with the machine's own library path, bounded.
smi() { bounded 30 env LD_LIBRARY_PATH="$ld_before" nvidia-smi "$@"; }
gpus_listed=0 # GPUs that nvidia-smi -L lists; none without nvidia-smi
if command -v nvidia-smi >/dev/null; then
	say "== nvidia-smi"
	smi 2>&1 | tee -a "$log" || say "nvidia-smi: failed"
	say "== nvidia-smi -L"
	smi -L >"$work/smi-list.txt" 2>&1 || say "nvidia-smi -L: failed"
	tee -a "$log" <"$work/smi-list.txt"
	gpus_listed=$(grep -c '^GPU [0-9]' "$work/smi-list.txt" || true)
	# Exclusive_Process lets one process at a time use the GPU: the
	# tests that share it between ranks fail.
	say "== nvidia-smi -q -d COMPUTE"
	smi -q -d COMPUTE >"$work/smi-compute.txt" 2>&1 || say "nvidia-smi -q -d COMPUTE: failed"
	tee -a "$log" <"$work/smi-compute.txt"
	modes=$(sed -n 's/^[[:space:]]*Compute Mode[[:space:]]*:[[:space:]]*//p' "$work/smi-compute.txt" | sort -u | tr '\n' ' ')
	case "$modes" in
	*Exclusive* | *Prohibited*) say "warning: compute mode ${modes% }: checks that share the GPU between processes will fail" ;;
	esac
else
	say "== nvidia-smi: not found (taken as no GPU)"
fi
command -v nvcc >/dev/null && say "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?')"
# Where the checks write: gpu_ckpt needs 2.2 x 8 GiB in /var/tmp.
say "== disk space where the checks write"
bounded 15 df -h --output=file,source,fstype,size,avail,target /tmp /var/tmp "$logdir" "$root" \
	${BENCH_GPU_CKPT_DIR:+"$BENCH_GPU_CKPT_DIR"} 2>&1 | tee -a "$log" || say "df: failed"
inventory "mlrun devices" "$work/devices.txt" "$build/launcher/mlrun" devices
inventory "mlrun devices --json" "$work/devices.json" "$build/launcher/mlrun" devices --json
cp "$work/devices.json" "$logdir/devices.json"
# nvidia-smi sees a GPU that mlrt does not: the driver's libcuda does not
# load or is older than the CUDA runtime, or a library is missing.  Every
# GPU check would skip; say it here, once, as a failure.
if [ "$gpus_listed" -gt 0 ] && [ "$inventory_rc" -eq 0 ]; then
	seen=$( (python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["devices"]))' \
		"$work/devices.json" || grep -c '"uuid"' "$work/devices.json") 2>/dev/null) || true
	if [ "$seen" = 0 ]; then
		cuda=$(sed -n 's/.*(\(driver CUDA [^)]*\)).*/\1/p' "$work/devices.txt" | head -1)
		say "mlrun devices: no device, although nvidia-smi -L lists $gpus_listed GPU(s)${cuda:+ ($cuda)}: driver/runtime mismatch or a library missing (LD_LIBRARY_PATH above); the GPU checks cannot run"
		record FAIL inventory "mlrun devices vs nvidia-smi -L" 0 "nvidia-smi lists $gpus_listed GPU, mlrun 0${cuda:+ ($cuda)}: driver/runtime or libraries"
	fi
fi

# ---- The checks -------------------------------------------------------------
MANIFEST_COUNT=0
# shellcheck source=/dev/null
. "$manifest"
say "== $MANIFEST_COUNT checks"
for ((i = 0; i < MANIFEST_COUNT; i++)); do
	name=${T_NAME[$i]} kind=${T_KIND[$i]}
	[ -z "${MLRT_GPU_ONLY:-}" ] || [[ "$only" == *" $name "* ]] || continue
	t=${T_TIMEOUT[$i]}
	{ [ "$t" -gt 0 ] && [ "$t" -le "$test_cap" ]; } || t=$test_cap
	l=$(($(left) - 5))
	[ "$l" -lt "$t" ] && t=$l
	if [ "$t" -lt 5 ]; then
		say "[$((i + 1))/$MANIFEST_COUNT] $kind $name: NOTRUN (the ${budget} s budget is spent)"
		record NOTRUN "$kind" "$name" 0 "budget spent"
		continue
	fi
	declare -n cmd_ref=T_CMD_$i env_ref=T_ENV_$i
	cmd=("${cmd_ref[@]//@MLRT_BUILD@/$build}")
	cmd=("${cmd[@]//@MLRT_SRC@/$root}")
	envs=()
	for e in "${env_ref[@]}"; do
		e=${e//@MLRT_BUILD@/$build}
		e=${e//@MLRT_SRC@/$root}
		case "$e" in # meson puts these before what is already set
		LD_LIBRARY_PATH=* | PATH=*) k=${e%%=*} && e="$e${!k:+:${!k}}" ;;
		esac
		envs+=("$e")
	done
	unset -n cmd_ref env_ref
	wd=${T_WORKDIR[$i]//@MLRT_BUILD@/$build}
	wd=${wd//@MLRT_SRC@/$root}
	out=$work/check-$i.out
	t0=$SECONDS
	rc=0
	(cd "$wd" && exec env "${envs[@]}" MESON_TEST_ITERATION=1 MALLOC_PERTURB_=$((RANDOM % 255 + 1)) \
		timeout -k 10 "$t" "${cmd[@]}") >"$out" 2>&1 </dev/null || rc=$?
	dt=$((SECONDS - t0))
	case $rc in
	0) res=PASS why= ;;
	77)
		why=$(grep . "$out" | tail -1 | cut -c1-70)
		res=SKIP
		# A skip means "no GPU here": not so where nvidia-smi lists one.
		[ "$gpus_listed" -eq 0 ] || res=FAIL why="skipped although nvidia-smi lists a GPU: $why"
		;;
	124 | 137) res=TIMEOUT why="over $t s" ;;
	*) res=FAIL why="exit $rc: $(grep . "$out" | tail -1 | cut -c1-60)" ;;
	esac
	record "$res" "$kind" "$name" "$dt" "$why"
	say "[$((i + 1))/$MANIFEST_COUNT] $kind $name (suite ${T_SUITE[$i]}): $res in $dt s${why:+ -- $why}"
	{
		echo "---- $kind $name: $res (exit $rc) in $dt s, timeout $t s, in $wd"
		echo "command: ${cmd[*]}"
		echo "env: ${envs[*]}"
		# The device tool brings back files of 16 MiB at most: a check
		# keeps 4 MiB of its output in the log, 256 KiB once it passes 8 MiB.
		keep=$((2 * 1048576))
		[ "$(stat -c %s "$log")" -lt $((8 * 1048576)) ] || keep=131072
		size=$(stat -c %s "$out")
		if [ "$size" -gt $((2 * keep)) ]; then
			head -c "$keep" "$out"
			echo "[... $((size - 2 * keep)) bytes left out ...]"
			tail -c "$keep" "$out"
		else
			cat "$out"
		fi
		echo "---- end of $name"
	} >>"$log"
	case $res in
	FAIL | TIMEOUT) tail -25 "$out" | sed 's/^/    /' ;;
	esac
done

# ---- Summary ----------------------------------------------------------------
say ""
say "== summary ($((SECONDS - start)) s of ${budget} s; log: $log)"
printf '%-8s %-10s %-32s %5s  %s\n' RESULT KIND NAME SEC NOTE | tee -a "$log"
for r in "${results[@]}"; do
	IFS=$'\t' read -r res kind name dt why <<<"$r"
	printf '%-8s %-10s %-32s %5s  %s\n' "$res" "$kind" "$name" "$dt" "$why" | tee -a "$log"
done
count() { printf '%s\n' "${results[@]}" | grep -c "^$1"$'\t' || true; }
pass=$(count PASS) skip=$(count SKIP) fail=$(($(count FAIL) + $(count TIMEOUT))) notrun=$(count NOTRUN)
say "$pass passed, $fail failed, $skip skipped, $notrun not run"
[ $((fail + notrun)) -eq 0 ]
