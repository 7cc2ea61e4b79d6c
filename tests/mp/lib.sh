# Shared helpers for the multi-process tests (sourced by bash).
set -u

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# A scratch directory removed on exit, whatever happens.
TMP=$(mktemp -d /tmp/mlrt-test.XXXXXX)
cleanup_hooks=()
cleanup() {
	for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT

# wait_for_files N GLOB TIMEOUT_S: until N files match GLOB.
wait_for_files() {
	local n=$1 glob=$2 deadline=$((SECONDS + $3))
	while [ "$(compgen -G "$glob" | wc -l)" -lt "$n" ]; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.05
	done
	return 0
}

now_ms() { date +%s%3N; }

# wait_line FILE PATTERN SECONDS: until a line of FILE matches PATTERN.
wait_line() {
	local deadline=$((SECONDS + $3))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.05
	done
}

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st:0:1}" != Z ]
}

# probes_by_hand STORE JOB PATTERN: two probes started without a launcher
# (MLRT_RANK 0 and 1 of 2) meet through STORE; each must print its rank
# and size, then PATTERN.
probes_by_hand() {
	local pids=() r
	for r in 0 1; do
		env MLRT_RANK=$r MLRT_WORLD_SIZE=2 MLRT_STORE="$1" MLRT_JOB_ID="$2" MLRT_TIMEOUT_MS=20000 \
			"$PROBE" >"$TMP/out-$r" 2>"$TMP/err-$r" &
		pids+=($!)
	done
	for r in 0 1; do
		wait "${pids[$r]}" || fail "rank $r exited $?: $(cat "$TMP/err-$r")"
		grep -q "^probe rank=$r size=2 $3" "$TMP/out-$r" || fail "rank $r: $(cat "$TMP/out-$r")"
	done
}
