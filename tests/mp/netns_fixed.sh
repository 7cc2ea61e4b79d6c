# Jobs that cannot shrink (mlrun -H on 4 namespace hosts, --nnodes 4:4):
#  1. an agent killed with no restarts left: mlrun fails, naming the host;
#  2. with a restart allowed, the head starts that host's agent again and
#     the job finishes;
#  3. a host's link down: the gang cannot form again without it, and the
#     error names it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns.sh"

netns_setup 4
STEPS=300
port=$((20000 + RANDOM % 12000))

run_job() { # NAME MLRUN-OPTIONS...: in the background
	local name=$1
	shift
	port=$((port + 1))
	timeout 120 "$MLRUN" -H "$(netns_hostlist 4 2)" --rsh 'ip netns exec {host}' \
		--rdzv-endpoint "$NS_HEAD:$port" --job-id "$name-$NS_TAG" --no-tag-output "$@" \
		-- "$ELASTIC_TRAINER" "$TMP/ck-$name" $STEPS 20 20 >"$TMP/$name.out" 2>"$TMP/$name.err" &
	head_pid=$!
	cleanup_hooks+=("kill -9 $head_pid 2>/dev/null")
}

kill_agent() { # NAME HOST-NAMESPACE
	wait_line "$TMP/$1.out" "^step 50 " 60 || fail "$1: no progress: $(cat "$TMP/$1.err")"
	kill -9 "$(netns_agent_of "$2")"
}

# 1. No restarts: the job fails and says which host was lost.
run_job none --max-restarts 0
kill_agent none "$NS_HOST3"
wait $head_pid && fail "none: mlrun succeeded without host $NS_HOST3"
grep -q "job none-$NS_TAG failed in generation 0: the agent of host $NS_HOST3 was killed by signal 9" \
	"$TMP/none.err" || fail "none: the lost host is not named: $(grep mlrun: "$TMP/none.err")"
echo "ok: $(grep -m1 'failed in generation 0' "$TMP/none.err")"

# 2. One restart: the head starts the agent again, the job finishes.
run_job again --max-restarts 1
kill_agent again "$NS_HOST3"
wait $head_pid || fail "again: mlrun exited $?: $(grep mlrun: "$TMP/again.err")"
grep -q "starting the agent of host $NS_HOST3 again" "$TMP/again.err" ||
	fail "again: no second agent: $(grep mlrun: "$TMP/again.err")"
grep -q "^finished $STEPS steps, world 8, generation 1" "$TMP/again.out" ||
	fail "again: $(tail -3 "$TMP/again.out")"
echo "ok: agent of $NS_HOST3 started again; $(tail -1 "$TMP/again.out")"

# 3. A link down: the next gang cannot form without that host.
run_job cut --max-restarts 1 --rdzv-timeout 4
wait_line "$TMP/cut.out" "^step 50 " 60 || fail "cut: no progress: $(cat "$TMP/cut.err")"
netns_cut 2
wait $head_pid && fail "cut: mlrun succeeded without host $NS_HOST2"
grep -q "missing: $NS_HOST2" "$TMP/cut.err" ||
	fail "cut: the missing host is not named: $(grep mlrun: "$TMP/cut.err")"
echo "ok: $(grep -m1 "missing: $NS_HOST2" "$TMP/cut.err")"
