# Shared by the benchmark scripts (sourced by bash).  They set run_timeout
# (seconds) and timeout_var (the variable that sets it, for messages).

# run_one LABEL OUT PATTERN CMD...: runs CMD with stdout to OUT under the
# time limit; when it fails or its output lacks PATTERN, shows its stderr
# and output and exits 1.
run_one() {
	local label=$1 out=$2 pattern=$3 rc
	shift 3
	timeout -k 10 "$run_timeout" "$@" >"$out" 2>"$out.err"
	rc=$?
	if [ $rc -ne 0 ] || ! grep -q "$pattern" "$out"; then
		{
			if [ $rc -eq 124 ]; then
				echo "FAIL: $label: no result within ${run_timeout} s ($timeout_var)"
			else
				echo "FAIL: $label: exit status $rc"
			fi
			echo "command: $*"
			echo "--- stderr:"
			tail -n 100 "$out.err"
			echo "--- stdout (last lines):"
			tail -n 30 "$out"
		} >&2
		exit 1
	fi
}
