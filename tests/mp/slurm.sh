# Programs run under Slurm's srun without mlrun: the test starts a private
# one-node Slurm cluster (munged, slurmctld, slurmd, all in $TMP, on free
# ports), then checks that `srun -n N` gives ranks 0..N-1 with
# launcher=slurm, that rank 0 serves the store by the Slurm rule (first
# node of SLURM_STEP_NODELIST, port 20000 + (job*16 + step) % 10000), that
# the collectives suite (coll_check, as in collectives.sh) passes over tcp
# and shm, and that a store port already taken gives errors that say what
# to set.  Needs root (slurmd starts the tasks) and Debian's slurmctld,
# slurmd, slurm-client and munge (scripts/install-deps).
. "$(dirname "$0")/lib.sh"

skip() {
	echo "SKIP: $*" >&2
	exit 77
}

[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start job steps; run as root"
for p in munged munge slurmctld slurmd srun sinfo squeue scancel ss; do
	command -v "$p" >/dev/null ||
		skip "$p is not installed (scripts/install-deps installs slurmctld slurmd slurm-client munge)"
done
host=$(hostname -s)
getent ahostsv4 "$host" >/dev/null ||
	skip "this host's name '$host' does not resolve to an IPv4 address, which Slurm and mlrt's Slurm store rule need"

# Nothing of an enclosing Slurm job or launcher may leak into ours.
for v in $(compgen -e); do
	case $v in
	SLURM_* | SLURMD_* | OMPI_* | PMIX_* | MLRT_* | MASTER_ADDR | MASTER_PORT | RANK | WORLD_SIZE) unset "$v" ;;
	esac
done

port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }
free_port() { # a free port in [30000, 31999], away from the store rule's 20000-29999
	local p
	for _ in $(seq 1 50); do
		p=$((30000 + RANDOM % 2000))
		port_free "$p" && [ "$p" != "${1:-}" ] && { echo "$p"; return 0; }
	done
	return 1
}
ctld_port=$(free_port) || fail "no free port in 30000-31999"
slurmd_port=$(free_port "$ctld_port") || fail "no free port in 30000-31999"
# Job ids start at a random number, so that the store ports the rule
# derives (one per job: each srun below is a job of one step) differ from
# run to run; check that the first few are free.
for _ in $(seq 1 20); do
	first_job=$((1000 + RANDOM % 30000))
	taken=0
	for j in $(seq "$first_job" $((first_job + 15))); do
		port_free $((20000 + (j * 16) % 10000)) || { taken=1; break; }
	done
	[ $taken = 0 ] && break
done

D=$TMP/slurm
mkdir -p "$D/state" "$D/spool" "$D/log"
chmod 700 "$D"
pids=()
stop_daemons() {
	local jobs
	# Jobs left by a failed check: their tasks would outlive slurmd.
	if [ ${#pids[@]} -ge 2 ] && pid_alive "${pids[1]}"; then
		jobs=$(timeout 5 squeue -h -o %i 2>/dev/null)
		[ -z "$jobs" ] || timeout 5 scancel --full --signal=KILL $jobs 2>/dev/null
	fi
	# slurmd first (it has the steps), the munge daemon last; each runs
	# under `timeout`, whose child is the daemon itself.
	local i d
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		d=$(pgrep -P "${pids[i]}")
		kill ${d:-} "${pids[i]}" 2>/dev/null
		for _ in $(seq 1 50); do pid_alive "${pids[i]}" || break; sleep 0.1; done
		kill -9 ${d:-} "${pids[i]}" 2>/dev/null
	done
	wait 2>/dev/null
	return 0
}
cleanup_hooks+=(stop_daemons)
daemon_logs() {
	local f
	for f in "$D"/log/*; do echo "--- $f"; tail -n 15 "$f"; done
}

# Munge with its own key and socket: Slurm signs every message with it.
head -c 1024 /dev/urandom >"$D/munge.key"
chmod 600 "$D/munge.key"
timeout -k 5 300 munged --foreground --force --socket="$D/munge.sock" --key-file="$D/munge.key" \
	--pid-file="$D/munged.pid" --seed-file="$D/munged.seed" --log-file="$D/log/munged.log" \
	>"$D/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	munge -S "$D/munge.sock" -n 2>/dev/null | unmunge -S "$D/munge.sock" >/dev/null 2>&1 && break
	pid_alive "${pids[0]}" || fail "munged exited: $(daemon_logs)"
	sleep 0.1
done
munge -S "$D/munge.sock" -n 2>/dev/null | unmunge -S "$D/munge.sock" >/dev/null 2>&1 ||
	fail "munged does not answer on $D/munge.sock: $(daemon_logs)"

cat >"$D/slurm.conf" <<EOF
ClusterName=mlrttest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge.sock
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
TmpFS=$D
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
FirstJobId=$first_job
KillWait=2
# The node claims 8 CPUs whatever the machine has, for 8 tasks.
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=mlrt Nodes=$host Default=YES MaxTime=10 State=UP
EOF
export SLURM_CONF=$D/slurm.conf

timeout -k 5 300 slurmctld -D -i >"$D/log/slurmctld.out" 2>&1 &
pids+=($!)
timeout -k 5 300 slurmd -D -N "$host" >"$D/log/slurmd.out" 2>&1 &
pids+=($!)
state=
deadline=$((SECONDS + 30))
while [ $SECONDS -lt $deadline ]; do
	state=$(timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null)
	[ "$state" = idle ] && break
	for p in "${pids[@]}"; do pid_alive "$p" || fail "a Slurm daemon exited: $(daemon_logs)"; done
	sleep 0.1
done
[ "$state" = idle ] || fail "node $host is not idle after 30 s (state '$state'): $(daemon_logs)"
echo "ok: slurm cluster up (slurmctld :$ctld_port, slurmd :$slurmd_port)"

# ranks_of FILE N: the ranks that logged "init: rank R of N", sorted.
ranks_of() { sed -n "s/^\[mlrt [0-9]*\] info: init: rank \([0-9]*\) of $2 .*/\1/p" "$1" | sort -nu | tr '\n' ' '; }

# Identity and the store rule.
timeout 60 srun -n 4 env MLRT_LOG_LEVEL=info "$PROBE" >"$TMP/out" 2>"$TMP/err" ||
	fail "srun probe exited $?: $(cat "$TMP/out" "$TMP/err")"
ranks=$(sed -n 's/^probe rank=\([0-9]*\) size=4 local_rank=\1 local_size=4 .*launcher=slurm$/\1/p' \
	"$TMP/out" | sort -n | tr '\n' ' ')
[ "$ranks" = "0 1 2 3 " ] || fail "ranks under srun: '$ranks': $(cat "$TMP/out" "$TMP/err")"
job=$(sed -n 's/.*init: rank 0 of 4 .*, job slurm-\([0-9]*\)\.\([0-9]*\), .*/\1 \2/p' "$TMP/err")
[ -n "$job" ] || fail "no job id in rank 0's log: $(cat "$TMP/err")"
read -r job_id step_id <<<"$job"
want=$((20000 + (job_id * 16 + step_id) % 10000))
grep -q "init: serving the store at tcp://0.0.0.0:$want (Slurm rule: rank 0 serves it on $host, the first node of SLURM_STEP_NODELIST" "$TMP/err" ||
	fail "rank 0 did not serve on port $want (job $job_id step $step_id): $(cat "$TMP/err")"
echo "ok: srun -n 4 probe: ranks $ranks, store on $host:$want (job $job_id step $step_id)"

# The collectives suite, as collectives.sh runs it under mlrun.
for transport in tcp shm; do
	for np in 2 3 4 5 8; do
		timeout 120 srun -n "$np" --kill-on-bad-exit=1 env MLRT_TRANSPORT="$transport" \
			MLRT_TIMEOUT_MS=60000 MLRT_LOG_LEVEL=info "$COLL_CHECK" >"$TMP/out" 2>"$TMP/err" ||
			fail "srun -n $np coll_check over $transport: exit $?: $(head -c 3000 "$TMP/err")"
		grep -q "coll_check: $np ranks: all collectives match the reference" "$TMP/out" ||
			fail "srun -n $np over $transport: $(cat "$TMP/out")"
		ranks=$(ranks_of "$TMP/err" "$np")
		[ "$ranks" = "$(seq -s ' ' 0 $((np - 1))) " ] ||
			fail "srun -n $np over $transport: ranks '$ranks': $(head -c 3000 "$TMP/err")"
		echo "ok: srun -n $np coll_check over $transport: ranks $ranks"
	done
done

# A store port that is taken (slurmctld's): rank 0 says so and what to
# set; the others give up after MLRT_TIMEOUT_MS and say the same.
rc=0
timeout 60 srun -n 2 env MLRT_STORE_PORT="$ctld_port" MLRT_TIMEOUT_MS=2000 "$PROBE" \
	>"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" -ne 0 ] || fail "probe succeeded with the store port taken: $(cat "$TMP/out" "$TMP/err")"
grep -q "rank 0 cannot serve the store at tcp://0.0.0.0:$ctld_port: .*set MLRT_STORE_PORT" "$TMP/err" ||
	fail "no clear error from rank 0: $(cat "$TMP/err")"
grep -q "\[mlrt 1\] error: init: the store at tcp://[0-9.]*:$ctld_port does not answer: .*Slurm rule.*set MLRT_STORE" "$TMP/err" ||
	fail "no clear error from rank 1: $(cat "$TMP/err")"
echo "ok: a taken store port fails with errors that say what to set"
