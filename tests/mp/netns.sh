# Network-namespace "hosts" for the multi-host tests (sourced after lib.sh).
#
#   netns_setup N   hosts $NS_HOST1..N (namespaces) joined by a bridge, with
#                   addresses $NS_NET.1..N; this machine's side of the
#                   bridge is $NS_HEAD ($NS_NET.254), where the head mlrun
#                   serves the job's store.  Skips (exit 77) without root.
#   netns_add I     one more host (after setup), e.g. to join a running job
#   netns_cut I     take host I's link down (its processes stay)
#   netns_uncut I   bring it up again
#   netns_kill_all  kill every process in the test's namespaces
#   netns_agent_of NS  the pid of the mlrun agent (mlrun --agent) in NS
#   netns_sshd N    an sshd in each of the first N hosts, with a key made
#                   here: $NS_SSH is the ssh command for --rsh and
#                   $NS_SSH_HOSTS the hosts' addresses for -H (2 slots each)
#
# Each run picks its own names and its own 10.213.X.0/24, so nothing
# outside the test is touched; everything is removed on exit, even when
# the test fails.

netns_check() {
	[ "$(id -u)" -eq 0 ] || { echo "SKIP: network namespaces need root" >&2; exit 77; }
	command -v ip >/dev/null || { echo "SKIP: iproute2 (ip) is not installed" >&2; exit 77; }
	ip netns add "mlrt-probe-$$" 2>/dev/null ||
		{ echo "SKIP: cannot create network namespaces here (ip netns add failed)" >&2; exit 77; }
	ip netns del "mlrt-probe-$$"
}

NS_TAG=$(printf '%04x' $((RANDOM % 65536)))
NS_NET=10.213.$((RANDOM % 250))
NS_HEAD=$NS_NET.254
NS_BRIDGE=mb$NS_TAG
NS_HOSTS=()

netns_add() {
	local i=$1 name="n${NS_TAG}h$1"
	ip netns add "$name" || fail "ip netns add $name"
	NS_HOSTS+=("$name")
	eval "NS_HOST$i=$name"
	ip link add "mv$NS_TAG$i" type veth peer name eth0 netns "$name" || fail "veth for $name"
	ip link set "mv$NS_TAG$i" master "$NS_BRIDGE" up
	ip -n "$name" addr add "$NS_NET.$i/24" dev eth0
	ip -n "$name" link set eth0 up
	ip -n "$name" link set lo up
}

netns_kill_all() {
	local h pids
	for h in "${NS_HOSTS[@]}"; do
		pids=$(ip netns pids "$h" 2>/dev/null)
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	done
	return 0
}

netns_agent_of() {
	local p
	for p in $(ip netns pids "$1"); do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- '--agent' && { echo "$p"; return; }
	done
}

netns_teardown() {
	local h
	netns_kill_all
	sleep 0.1
	for h in "${NS_HOSTS[@]}"; do ip netns del "$h" 2>/dev/null; done
	ip link del "$NS_BRIDGE" 2>/dev/null
	return 0
}

netns_setup() {
	local i
	netns_check
	cleanup_hooks+=("netns_teardown")
	# A bridge's address follows its ports' lowest unless set: a host added
	# later (netns_add) would change it, and every host would lose the head
	# for seconds until its ARP entry was renewed.  So set one (locally
	# administered).
	ip link add "$NS_BRIDGE" address "$(printf '02:6d:%02x:%02x:%02x:%02x' $((RANDOM % 256)) \
		$((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))" type bridge ||
		fail "cannot create bridge $NS_BRIDGE"
	ip addr add "$NS_HEAD/24" dev "$NS_BRIDGE"
	ip link set "$NS_BRIDGE" up
	for i in $(seq 1 "$1"); do netns_add "$i"; done
	# Bridged traffic must not be filtered (br_netfilter with a DROP
	# policy): a connection to a closed port is refused, not lost.
	ip netns exec "${NS_HOSTS[0]}" timeout 5 bash -c "echo >/dev/tcp/$NS_HEAD/9" 2>&1 |
		grep -q refused || fail "host ${NS_HOSTS[0]} cannot reach $NS_HEAD over the test bridge"
}

netns_cut() {
	ip link set "mv$NS_TAG$1" down
}

netns_uncut() {
	ip link set "mv$NS_TAG$1" up
}

# A "-H" list of the first N hosts with P workers each.
netns_hostlist() {
	local n=$1 p=$2 i list=
	for i in $(seq 1 "$n"); do list="$list${list:+,}${NS_HOSTS[$((i - 1))]}:$p"; done
	echo "$list"
}

netns_sshd() {
	local i sshd
	sshd=$(command -v sshd || echo /usr/sbin/sshd)
	[ -x "$sshd" ] || { echo "SKIP: sshd (openssh-server) is not installed" >&2; exit 77; }
	command -v ssh >/dev/null || { echo "SKIP: ssh (openssh-client) is not installed" >&2; exit 77; }
	mkdir -p "$TMP/ssh" /run/sshd
	ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/id" || fail "ssh-keygen (user key)"
	ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/host" || fail "ssh-keygen (host key)"
	cat >"$TMP/ssh/sshd_config" <<CONF
HostKey $TMP/ssh/host
AuthorizedKeysFile $TMP/ssh/id.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
AcceptEnv none
CONF
	NS_SSH_HOSTS=
	for i in $(seq 1 "$1"); do
		(ip netns exec "${NS_HOSTS[$((i - 1))]}" "$sshd" -D -e -f "$TMP/ssh/sshd_config" \
			-o ListenAddress="$NS_NET.$i" 2>>"$TMP/ssh/sshd.log" &)
		NS_SSH_HOSTS="$NS_SSH_HOSTS${NS_SSH_HOSTS:+,}$NS_NET.$i:2"
	done
	NS_SSH="ssh -i $TMP/ssh/id -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5"
	# Bounded wait until every sshd answers.
	for i in $(seq 1 "$1"); do
		local deadline=$((SECONDS + 10))
		until $NS_SSH "$NS_NET.$i" true 2>/dev/null; do
			[ $SECONDS -ge $deadline ] && fail "sshd on $NS_NET.$i does not answer: $(cat "$TMP/ssh/sshd.log")"
			sleep 0.1
		done
	done
}
