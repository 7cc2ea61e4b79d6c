# Elastic jobs on network-namespace hosts (mlrun -H, --nnodes 2:4):
#  1. kill -9 the agent of a host: the survivors go on as a smaller gang
#     from the last checkpoint; then a fifth host starts an agent and the
#     next generation includes it; the job finishes with every step done.
#  2. take a host's link down: the same, found by the heartbeats;
#  3. kill an agent of a job that commits its state in memory every step
#     (mlrt_elastic_commit): the survivors resume from the newest step that
#     any host kept, not from the last checkpoint.
# Prints the time from each fault to the first step of the new generation.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns.sh"

netns_setup 4
STEPS=400
port=$((20000 + RANDOM % 12000))

# start_job NAME [memory]: an elastic job on the 4 hosts, in the background.
start_job() {
	job=$1-$NS_TAG
	port=$((port + 1))
	timeout 240 "$MLRUN" -H "$(netns_hostlist 4 2)" --rsh 'ip netns exec {host}' \
		--rdzv-endpoint "$NS_HEAD:$port" --job-id "$job" --nnodes 2:4 --max-restarts 3 \
		--no-tag-output -- "$ELASTIC_TRAINER" "$TMP/ck-$1" $STEPS 20 20 ${2:-} \
		>"$TMP/$1.out" 2>"$TMP/$1.err" &
	head_pid=$!
	cleanup_hooks+=("kill -9 $head_pid 2>/dev/null")
}

# recovery NAME GEN WORLD FAULT_MS: print fault -> first step of GEN.
recovery() {
	wait_line "$TMP/$1.out" "^generation $2 world $3 completed step" 60 ||
		fail "$1: no generation $2 with world $3: $(tail -5 "$TMP/$1.out") $(tail -20 "$TMP/$1.err")"
	local t
	t=$(sed -n "s/^generation $2 world $3 completed step [0-9]* at //p" "$TMP/$1.out")
	echo "$1: fault to the first step of generation $2 (world $3): $((t - $4)) ms"
}

finish() { # NAME: the job ends well, every step done
	wait $head_pid || fail "$1: mlrun exited $?: $(tail -20 "$TMP/$1.err")"
	grep -q "^finished $STEPS steps" "$TMP/$1.out" ||
		fail "$1: did not finish: $(tail -5 "$TMP/$1.out")"
}

# 1. An agent killed, then a fifth host joins.
start_job kill
wait_line "$TMP/kill.out" "^step 50 " 60 || fail "kill: no progress: $(cat "$TMP/kill.err")"
victim=$(netns_agent_of "$NS_HOST3")
[ -n "$victim" ] || fail "kill: no agent in $NS_HOST3"
t0=$(now_ms)
kill -9 "$victim"
recovery kill 1 6 "$t0"
grep -q "membership: generation 1 formed.* with 3 host(s), world size 6; left: $NS_HOST3; joined: none" \
	"$TMP/kill.err" || fail "kill: no membership line: $(grep mlrun: "$TMP/kill.err")"

netns_add 5
t0=$(now_ms)
ip netns exec "$NS_HOST5" env MLRT_HOSTNAME="$NS_HOST5" timeout 120 "$MLRUN" \
	--rdzv-endpoint "$NS_HEAD:$port" --job-id "$job" --nnodes 2:4 -np 2 --no-tag-output \
	-- "$ELASTIC_TRAINER" "$TMP/ck-kill" $STEPS 20 20 >"$TMP/h5.out" 2>"$TMP/h5.err" &
h5=$!
recovery kill 2 8 "$t0"
grep -q "membership: generation 2 formed.* world size 8; left: none; joined: $NS_HOST5" \
	"$TMP/kill.err" || fail "join: no membership line: $(grep mlrun: "$TMP/kill.err")"
finish kill
wait $h5 || fail "the fifth host's mlrun exited $?: $(tail "$TMP/h5.err")"
grep -q "^finished $STEPS steps, world 8, generation 2" "$TMP/kill.out" ||
	fail "kill: $(tail -1 "$TMP/kill.out")"
echo "ok: agent killed, job went on with 3 hosts, a fifth joined: $(tail -1 "$TMP/kill.out")"
echo "the head's log:"
grep '^mlrun:' "$TMP/kill.err" | sed 's/^/  | /'

# 2. A host's link goes down.
netns_kill_all
start_job cut
wait_line "$TMP/cut.out" "^step 50 " 60 || fail "cut: no progress: $(cat "$TMP/cut.err")"
t0=$(now_ms)
netns_cut 2
recovery cut 1 6 "$t0"
finish cut
grep -q "host $NS_HOST2 (ranks 2-3) lost: no heartbeat" "$TMP/cut.err" ||
	fail "cut: the lost host is not named: $(grep mlrun: "$TMP/cut.err")"
grep -q "host $NS_HOST2 is cut off from the job" "$TMP/cut.err" ||
	fail "cut: the cut-off host did not leave: $(grep mlrun: "$TMP/cut.err")"
echo "ok: link of $NS_HOST2 down, job finished on 3 hosts: $(tail -1 "$TMP/cut.out")"
echo "the head's log:"
grep '^mlrun:' "$TMP/cut.err" | sed 's/^/  | /'

# 3. State in memory: resumed from the last step, not the last checkpoint.
netns_kill_all
netns_uncut 2
cleanup_hooks+=("rm -f /dev/shm/mlrt-es-mem-$NS_TAG-*")
start_job mem memory
wait_line "$TMP/mem.out" "^step 50 " 60 || fail "mem: no progress: $(cat "$TMP/mem.err")"
t0=$(now_ms)
kill -9 "$(netns_agent_of "$NS_HOST4")"
recovery mem 1 6 "$t0"
finish mem
line=$(grep "^generation 1 world 6 initialised" "$TMP/mem.out")
case "$line" in
*"(memory)") ;;
*) fail "mem: generation 1 did not start from the state in memory: $line" ;;
esac
resumed=$(echo "$line" | sed 's/.*from step \([0-9]*\).*/\1/')
[ $((resumed % 20)) -ne 0 ] || [ "$resumed" -gt 50 ] ||
	fail "mem: resumed from step $resumed, which a checkpoint has too"
echo "ok: agent killed, survivors resumed from step $resumed in memory (checkpoints every 20)"
