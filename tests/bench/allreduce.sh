#!/usr/bin/env bash
# Allreduce benchmark: mlrt against Open MPI's MPI_Allreduce in the same
# run, in two pairings, for each number of ranks:
#
#   tcp: mlrt with MLRT_TRANSPORT=tcp  vs  mpirun --mca btl self,tcp
#   shm: mlrt's default (shm here)     vs  Open MPI's default
#
# The sizes are cut into blocks of BENCH_BLOCK consecutive sizes; each
# block runs BENCH_REPS times, mlrt and MPI alternating, so that the two
# sides of a ratio are measured seconds apart (this VM's speed drifts by 2x
# within minutes); per size the median of the runs is taken, and the
# ratio is the median of the runs' ratios (each mlrt run against the MPI
# run right after it).  See docs/benchmarks.md.
#
# Environment (meson's benchmark() sets the first three):
#   MLRUN, BENCH_MLRT, BENCH_MPI  mlrun, bench_allreduce, mpi_allreduce
#                                 (default: under build/ of this checkout)
#   BENCH_NP="2 4 8"              numbers of ranks
#   BENCH_PAIRS="tcp shm"         pairings to run (tcp: both over TCP; shm: defaults)
#   BENCH_REPS=5                  runs of each configuration
#   BENCH_BLOCK=3                 sizes per block (one run covers a block)
#   BENCH_MIN=4096 BENCH_MAX=268435456
#                                 message sizes in bytes (K/M/G allowed)
#   BENCH_ARGS                    more arguments for both programs (-n, -w, -t)
#   BENCH_MPIRUN_ARGS             more arguments for mpirun (e.g. --bind-to none)
#   BENCH_RUN_TIMEOUT=900         seconds allowed for one run
#
# Exit status: 0; 77 (skipped) without mpirun or mpi_allreduce; 1 when a
# run fails (its stderr is printed) or prints no figures.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${MESON_BUILD_ROOT:-$here/../../build}
MLRUN=${MLRUN:-$build/launcher/mlrun}
BENCH_MLRT=${BENCH_MLRT:-$build/tests/bench/bench_allreduce}
BENCH_MPI=${BENCH_MPI-$build/tests/bench/mpi_allreduce}
np_list=${BENCH_NP:-2 4 8}
reps=${BENCH_REPS:-5}
block=${BENCH_BLOCK:-3}
min=${BENCH_MIN:-4096}
max=${BENCH_MAX:-268435456}
run_timeout=${BENCH_RUN_TIMEOUT:-900}
timeout_var=BENCH_RUN_TIMEOUT
. "$(dirname "$0")/lib.sh"
read -r -a prog_args <<<"${BENCH_ARGS:-}"
read -r -a mpirun_args <<<"${BENCH_MPIRUN_ARGS:-}"

# Keeps Open MPI's temporary buffers in the heap instead of mmap'ing and
# unmapping them on every call (docs/benchmarks.md, "GLIBC_TUNABLES").
mpi_tunables=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

if ! command -v mpirun >/dev/null; then
	echo "SKIP: mpirun (Open MPI) is not installed; the allreduce benchmark needs it for the baseline" >&2
	exit 77
fi
if [ -z "$BENCH_MPI" ] || [ ! -x "$BENCH_MPI" ]; then
	echo "SKIP: the MPI side (mpi_allreduce) was not built: '${BENCH_MPI}' (configure with -Dmpi=enabled)" >&2
	exit 77
fi
[ -x "$MLRUN" ] || fail "mlrun not found at $MLRUN (build with ninja -C build, or set MLRUN)"
[ -x "$BENCH_MLRT" ] || fail "bench_allreduce not found at $BENCH_MLRT (build it, or set BENCH_MLRT)"
case $reps in
'' | *[!0-9]* | 0) fail "BENCH_REPS must be a positive integer, not '$reps'" ;;
esac
case $block in
'' | *[!0-9]* | 0) fail "BENCH_BLOCK must be a positive integer, not '$block'" ;;
esac

# Bytes of a size with an optional K, M or G suffix (as the programs take).
bytes() {
	local n=${1%[KkMmGg]}
	case $n in '' | *[!0-9]*) fail "not a size: '$1' (bytes, K/M/G allowed)" ;; esac
	case $1 in
	*[Kk]) echo $((n << 10)) ;;
	*[Mm]) echo $((n << 20)) ;;
	*[Gg]) echo $((n << 30)) ;;
	*) echo "$n" ;;
	esac
}
# The blocks: "first last" per line, BENCH_BLOCK doubling sizes each.
lo=$(bytes "$min") && hi=$(bytes "$max") || exit 1
[ "$lo" -gt 0 ] && [ "$hi" -ge "$lo" ] || fail "BENCH_MIN must be > 0 and <= BENCH_MAX"
blocks=$(
	while [ "$lo" -le "$hi" ]; do
		last=$lo
		for ((i = 1; i < block && last * 2 <= hi; i++)); do last=$((last * 2)); done
		echo "$lo $last"
		lo=$((last * 2))
	done
)
for np in $np_list; do
	case $np in
	'' | *[!0-9]* | 0 | 1) fail "BENCH_NP must list numbers of ranks >= 2, not '$np'" ;;
	esac
done

TMP=$(mktemp -d /tmp/mlrt-bench-allreduce.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# report PAIR NP FILES...: the comparison table of one configuration from
# the runs' outputs (a file name holds -mlrt- or -mpi-), and its summary
# line appended to $TMP/summary.
report() {
	local pair=$1 np=$2
	shift 2
	awk -v pair="$pair" -v np="$np" -v reps="$reps" -v summary="$TMP/summary" '
	function median(list,    v, n, i, j, x) {
		n = split(list, v, " ")
		for (i = 2; i <= n; i++) {
			x = v[i] + 0
			for (j = i - 1; j >= 1 && v[j] + 0 > x; j--)
				v[j + 1] = v[j]
			v[j + 1] = x
		}
		return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
	}
	{
		impl = FILENAME ~ /-mlrt-/ ? "mlrt" : "mpi"
		run = FILENAME
		sub(/.*-/, "", run) # the repetition: mlrt and MPI runs of a block pair up
	}
	/^# peak RSS:/ {
		# "... max over ranks X MiB; buffers 2 x B MiB; ..."
		for (i = 1; i < NF; i++) {
			if ($i == "ranks" && $(i + 1) + 0 > rss[impl])
				rss[impl] = $(i + 1) + 0
			if ($i == "x")
				buf = $(i + 1) + 0
		}
		next
	}
	$1 ~ /^[0-9]+$/ && NF >= 5 {
		s = $1 + 0
		if (!(s in seen)) {
			seen[s] = 1
			sizes[++nsizes] = s
		}
		tm[impl, s] = tm[impl, s] " " $3
		bw[impl, s] = bw[impl, s] " " $5
		bwrun[impl, s, run] = $5
		runs[run] = 1
	}
	END {
		printf "%12s %14s %12s %14s %12s %12s\n", "size", "mlrt time_us", "mlrt busbw",
		       "MPI time_us", "MPI busbw", "ratio busbw"
		printf "%12s %14s %12s %14s %12s %12s\n", "bytes", "", "GB/s", "", "GB/s", "mlrt/MPI"
		minr = -1
		for (k = 1; k <= nsizes; k++) {
			s = sizes[k]
			if (!(("mlrt", s) in tm) || !(("mpi", s) in tm)) {
				printf "%12d   (missing from the %s runs)\n", s,
				       (("mlrt", s) in tm) ? "MPI" : "mlrt"
				continue
			}
			mt = median(tm["mlrt", s]); mb = median(bw["mlrt", s])
			pt = median(tm["mpi", s]); pb = median(bw["mpi", s])
			# The ratio: the median over the runs of mlrt/MPI, the two
			# measured seconds apart (so under the same machine).
			ratios = ""
			for (k2 in runs)
				if ((("mlrt", s, k2) in bwrun) && (("mpi", s, k2) in bwrun) &&
				    bwrun["mpi", s, k2] > 0)
					ratios = ratios " " bwrun["mlrt", s, k2] / bwrun["mpi", s, k2]
			r = ratios != "" ? median(ratios) : 0
			printf "%12d %14.2f %12.3f %14.2f %12.3f %12.2f\n", s, mt, mb, pt, pb, r
			if (s >= 1048576 && (minr < 0 || r < minr)) {
				minr = r
				minr_at = s
			}
			if (lat_at == "" || s == 4096) {
				lat_at = s
				lat = pt > 0 ? mt / pt : 0
				lat_m = mt
				lat_p = pt
			}
		}
		printf "peak RSS, max over ranks and runs: mlrt %.1f MiB, MPI %.1f MiB (buffers 2 x %.1f MiB)\n",
		       rss["mlrt"], rss["mpi"], buf
		line = sprintf("%s np %d:", pair, np)
		if (minr >= 0)
			line = line sprintf(" min busbw ratio mlrt/MPI from 1 MiB up %.2f (at %d B);",
					    minr, minr_at)
		else
			line = line " min busbw ratio from 1 MiB up n/a (no size >= 1 MiB);"
		if (lat_at != "")
			line = line sprintf(" %s latency ratio mlrt/MPI time %.2f (%.1f vs %.1f us)",
					    lat_at == 4096 ? "4 KiB" : lat_at " B", lat, lat_m, lat_p)
		print line >>summary
	}' "$@"
}

echo "# allreduce: mlrt vs Open MPI, float32 sum; sizes $min..$max bytes; np: $np_list;" \
	"median of $reps run(s) per size"
echo "# host $(hostname), $(nproc) CPUs; $(mpirun --version 2>/dev/null | head -n 1)"
: >"$TMP/summary"

for pair in ${BENCH_PAIRS:-tcp shm}; do
	for np in $np_list; do
		if [ "$pair" = tcp ]; then
			mlrt_env=(env MLRT_TRANSPORT=tcp)
			mpi_btl=(--mca btl self,tcp)
			title="mlrt MLRT_TRANSPORT=tcp vs mpirun --mca btl self,tcp"
		else
			mlrt_env=(env -u MLRT_TRANSPORT)
			mpi_btl=()
			title="mlrt default transport (shm) vs Open MPI default"
		fi
		files=()
		while read -r lo hi <&3; do
			for rep in $(seq 1 "$reps"); do
				out=$TMP/$pair-np$np-mlrt-$lo-$rep
				run_one "mlrt $pair np $np sizes $lo-$hi run $rep" "$out" '^ *[0-9]' \
					"$MLRUN" -np "$np" --no-tag-output -- "${mlrt_env[@]}" \
					"$BENCH_MLRT" -b "$lo" -e "$hi" "${prog_args[@]}"
				files+=("$out")
				out=$TMP/$pair-np$np-mpi-$lo-$rep
				run_one "MPI $pair np $np sizes $lo-$hi run $rep" "$out" '^ *[0-9]' \
					mpirun --oversubscribe --allow-run-as-root -np "$np" \
					-x GLIBC_TUNABLES="$mpi_tunables" "${mpi_btl[@]}" "${mpirun_args[@]}" \
					"$BENCH_MPI" -b "$lo" -e "$hi" "${prog_args[@]}"
				files+=("$out")
			done
		done 3<<<"$blocks"
		echo
		echo "== $pair, np $np: $title (median of $reps run(s)) =="
		report "$pair" "$np" "${files[@]}" || fail "cannot summarise $pair np $np"
	done
done

echo
echo "== summary =="
cat "$TMP/summary"
