# Ranks on several hosts (laid out on this machine with MLRT_HOSTNAME):
# shm within a host, tcp between hosts, and the hierarchical allreduce
# when every host has the same number of ranks (flat ring otherwise); all
# collectives still match the reference.
. "$(dirname "$0")/lib.sh"

wrap="$(dirname "$0")/fake_hosts.sh"
for layout in "4 2" "6 3" "6 2" "5 2"; do
	set -- $layout
	np=$1 per=$2
	PER=$per timeout 300 "$MLRUN" -np "$np" --no-tag-output -- env MLRT_TIMEOUT_MS=60000 \
		MLRT_LOG_LEVEL=debug sh "$wrap" "$COLL_CHECK" >"$TMP/out" 2>"$TMP/err" ||
		fail "np $np, $per per host: exit $?: $(grep -v debug "$TMP/err" | head -c 3000)"
	grep -q "coll_check: $np ranks: all collectives match the reference" "$TMP/out" ||
		fail "np $np: $(cat "$TMP/out")"
	hosts=$(((np + per - 1) / per))
	if [ $((np % per)) -eq 0 ]; then
		grep -q "hierarchical, $hosts hosts x $per ranks" "$TMP/err" ||
			fail "np $np, $per per host: the hierarchical allreduce was not used"
	else
		grep -q "hierarchical" "$TMP/err" && fail "np $np: uneven hosts must use the flat ring"
	fi
	echo "ok: $np ranks, $per per host"
done
