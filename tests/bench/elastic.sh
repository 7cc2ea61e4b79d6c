# Start-up and recovery on 16 network-namespace hosts x 4 workers
# (mlrun -H, --rsh 'ip netns exec {host}', --nnodes 8:16, default
# heartbeats), three jobs; medians:
#   start-up: from running mlrun to every rank past mlrt_init (a barrier
#             after it), against mpirun -np 64 and mlrun -np 64 on one host
#             (Open MPI's daemons cannot start inside these namespaces: they
#             all report the same host name)
#   recovery: kill -9 of one host's agent, then one host's link down, to
#             the first completed step of the smaller generation
# Targets: start-up < 3 s, recovery < 5 s.  Needs root (exit 77 otherwise).
here=$(dirname "$0")
. "$here/../mp/lib.sh"
. "$here/../mp/netns.sh"

HOSTS=${BENCH_ELASTIC_HOSTS:-16}
PER=${BENCH_ELASTIC_PER:-4}
ROUNDS=${BENCH_ELASTIC_ROUNDS:-3}
NP=$((HOSTS * PER))
netns_setup "$HOSTS"
port=$((20000 + RANDOM % 12000))

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# first_step FILE GEN WORLD: the wall time of GEN's first completed step.
first_step() {
	wait_line "$1" "^generation $2 world $3 completed step" 90 ||
		fail "no generation $2 with world $3: $(tail -3 "$1"; grep mlrun: "$1.err" | tail -5)"
	sed -n "s/^generation $2 world $3 completed step [0-9]* at //p" "$1"
}

startups=() kills=() cuts=()
for round in $(seq 1 "$ROUNDS"); do
	out=$TMP/job$round
	port=$((port + 1))
	netns_kill_all
	for i in $(seq 1 "$HOSTS"); do netns_uncut "$i"; done
	t0=$(now_ms)
	timeout 300 "$MLRUN" -H "$(netns_hostlist "$HOSTS" "$PER")" --rsh 'ip netns exec {host}' \
		--rdzv-endpoint "$NS_HEAD:$port" --job-id "bench$round-$NS_TAG" --nnodes $((HOSTS / 2)):$HOSTS \
		--max-restarts 5 --no-tag-output -- "$ELASTIC_TRAINER" "$TMP/ck$round" 1000000 50 10 \
		>"$out" 2>"$out.err" &
	head_pid=$!
	cleanup_hooks+=("kill -9 $head_pid 2>/dev/null")
	wait_line "$out" "^generation 0 world $NP initialised" 120 ||
		fail "the job did not start: $(tail -20 "$out.err")"
	startups+=($(($(sed -n "s/^generation 0 world $NP initialised at \([0-9]*\).*/\1/p" "$out") - t0)))
	first_step "$out" 0 $NP >/dev/null
	sleep 1
	t0=$(now_ms)
	kill -9 "$(netns_agent_of "${NS_HOSTS[$((HOSTS - 1))]}")"
	kills+=($(($(first_step "$out" 1 $((NP - PER))) - t0)))
	sleep 1
	t0=$(now_ms)
	netns_cut $((HOSTS - 1))
	cuts+=($(($(first_step "$out" 2 $((NP - 2 * PER))) - t0)))
	kill -TERM $head_pid
	wait $head_pid
	echo "round $round: start-up ${startups[-1]} ms, agent killed -> resumed ${kills[-1]} ms, link down -> resumed ${cuts[-1]} ms"
done
netns_kill_all

# The peers: the same program and world size on one host.
peer_mpi=() peer_local=()
for round in $(seq 1 "$ROUNDS"); do
	if command -v mpirun >/dev/null; then
		t0=$(now_ms)
		timeout 300 mpirun --allow-run-as-root --oversubscribe -np $NP --mca btl self,vader,tcp \
			"$ELASTIC_TRAINER" "$TMP/mpi$round" 1 1 0 >"$TMP/mpi" 2>"$TMP/mpi.err" ||
			fail "mpirun: $(tail "$TMP/mpi.err")"
		peer_mpi+=($(($(sed -n "s/^generation 0 world $NP initialised at \([0-9]*\).*/\1/p" "$TMP/mpi") - t0)))
	fi
	t0=$(now_ms)
	timeout 300 "$MLRUN" -np $NP --no-tag-output "$ELASTIC_TRAINER" "$TMP/one$round" 1 1 0 \
		>"$TMP/one" 2>"$TMP/one.err" || fail "mlrun -np $NP: $(tail "$TMP/one.err")"
	peer_local+=($(($(sed -n "s/^generation 0 world $NP initialised at \([0-9]*\).*/\1/p" "$TMP/one") - t0)))
done

s=$(printf '%s\n' "${startups[@]}" | median)
k=$(printf '%s\n' "${kills[@]}" | median)
c=$(printf '%s\n' "${cuts[@]}" | median)
l=$(printf '%s\n' "${peer_local[@]}" | median)
echo
echo "$HOSTS namespace hosts x $PER workers, medians of $ROUNDS:"
printf '  start-up (mlrun -H to all ranks past init): %6d ms  (target < 3000)\n' "$s"
printf '  mlrun -np %d on one host:                   %6d ms\n' $NP "$l"
if [ ${#peer_mpi[@]} -gt 0 ]; then
	m=$(printf '%s\n' "${peer_mpi[@]}" | median)
	printf '  mpirun -np %d on one host (peer):          %6d ms  (ratio mlrun -H / mpirun: %.2f)\n' \
		$NP "$m" "$(awk -v a="$s" -v b="$m" 'BEGIN { print a / b }')"
fi
printf '  agent killed -> first step, 15 hosts:       %6d ms  (target < 5000)\n' "$k"
printf '  link down -> first step, 14 hosts:          %6d ms  (target < 5000; heartbeat timeout 2 s)\n' "$c"
