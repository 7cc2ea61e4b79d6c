# A real etcd on loopback for the tests (sourced after lib.sh; needs
# $STORE_OP).  start_etcd sets etcd_pid, ADDR (etcd://127.0.0.1:PORT) and
# PEER_ADDR; etcd is killed on exit.

# A TCP port in 20000-31999 that no socket on this host uses now.
pick_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# Start etcd on fresh ports with an empty data dir and wait (bounded) until
# it answers through mlrt.  Another process may take a port between the
# look and etcd's bind: then try other ports.  Sets etcd_pid, ADDR and
# PEER_ADDR (etcd's peer port: HTTP, but not the client API).
etcd_pid=
# shellcheck disable=SC2016  # single quotes: expanded at exit, with the etcd_pid of then
cleanup_hooks+=('if [ -n "$etcd_pid" ]; then kill -9 $etcd_pid; wait $etcd_pid; fi 2>/dev/null')
start_etcd() {
	local try client peer deadline
	for try in 1 2 3; do
		client=$(pick_port) && peer=$(pick_port) || fail "no free port in 20000-31999"
		[ "$client" != "$peer" ] || continue
		rm -rf "$TMP/etcd"
		# Values up to 16 MiB (MLRT_STORE_MAX_VALUE) need a raised request limit.
		etcd --name mlrt-test --data-dir "$TMP/etcd" \
			--listen-client-urls "http://127.0.0.1:$client" \
			--advertise-client-urls "http://127.0.0.1:$client" \
			--listen-peer-urls "http://127.0.0.1:$peer" \
			--initial-advertise-peer-urls "http://127.0.0.1:$peer" \
			--initial-cluster "mlrt-test=http://127.0.0.1:$peer" \
			--max-request-bytes $((40 * 1024 * 1024)) >"$TMP/etcd.log" 2>&1 &
		etcd_pid=$!
		ADDR="etcd://127.0.0.1:$client" PEER_ADDR="etcd://127.0.0.1:$peer"
		deadline=$((SECONDS + 20))
		while pid_alive "$etcd_pid" && [ $SECONDS -lt $deadline ]; do
			rc=0
			MLRT_STORE_TIMEOUT_MS=1000 "$STORE_OP" "$ADDR" get mlrt-test/ping \
				>/dev/null 2>&1 || rc=$?
			[ $rc -eq 5 ] && return 0 # MLRT_ERR_NOT_FOUND: etcd answers
			sleep 0.1
		done
		kill -9 "$etcd_pid" 2>/dev/null
		wait "$etcd_pid" 2>/dev/null
		echo "etcd did not come up on ports $client, $peer (try $try): $(tail -3 "$TMP/etcd.log")" >&2
	done
	fail "cannot start etcd: $(tail -20 "$TMP/etcd.log")"
}
