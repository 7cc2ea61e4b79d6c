# GPU inventory and requirements against inventories given in a file
# (MLRT_DEVICE_INVENTORY, for tests), so that they run without GPUs:
# `mlrun devices` shows the file's inventory (table, and --json that reads
# back the same), with -H every host's; a host that cannot meet --gpus-per-proc, --gpu-mem or
# --cuda refuses the job, naming itself and what is missing, and no worker
# starts on any host; a job that fits gives each worker its own GPUs
# (CUDA_VISIBLE_DEVICES, as entries of mlrun's own list when it has one);
# a malformed inventory file is refused, saying where.
. "$(dirname "$0")/lib.sh"

gib=1073741824
device() { # INDEX NAME UUID-TAIL PCI GIB CC
	printf '{"index": %d, "name": "%s", "uuid": "GPU-00000000-0000-0000-0000-%012d", "pci_bus_id": "%s", "mem_total": %d, "mem_free": %d, "compute_capability": "%s"}' \
		"$1" "$2" "$3" "$4" $(($5 * gib)) $(($5 * gib - 512 * 1048576)) "$6"
}
h100() { device "$1" "NVIDIA H100 80GB HBM3" "$((100 + $1))" "00000000:1$1:00.0" 80 9.0; }
a100() { device "$1" "NVIDIA A100-SXM4-40GB" "$((200 + $1))" "00000000:2$1:00.0" 40 8.0; }
cat >"$TMP/inv.json" <<EOF
[{"host": "hostA", "cuda_driver": "12.4", "cuda_runtime": "13.0",
  "devices": [$(h100 0), $(h100 1)]},
 {"host": "hostB", "cuda_driver": "12.2", "cuda_runtime": "13.0",
  "devices": [$(a100 0), $(a100 1)]}]
EOF
export MLRT_DEVICE_INVENTORY=$TMP/inv.json

# The inventory, as a table and as JSON; the JSON read back as an
# inventory gives the same table.
MLRT_HOSTNAME=hostA "$MLRUN" devices >"$TMP/table" 2>"$TMP/err" || fail "mlrun devices: $(cat "$TMP/err")"
grep -q '^host hostA: 2 CUDA devices (driver CUDA 12.4, runtime 13.0)$' "$TMP/table" ||
	fail "summary line: $(cat "$TMP/table")"
grep -q '^1 *NVIDIA H100 80GB HBM3 *GPU-00000000-0000-0000-0000-000000000101 00000000:11:00.0 *81920 *81408 9.0 *-$' \
	"$TMP/table" || fail "device row: $(cat "$TMP/table")"
MLRT_HOSTNAME=hostB "$MLRUN" devices --json >"$TMP/b.json" || fail "mlrun devices --json"
python3 - "$TMP/b.json" <<'PY' || fail "--json: $(cat "$TMP/b.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["host"] == "hostB" and d["cuda_driver"] == "12.2", d
assert [g["name"] for g in d["devices"]] == ["NVIDIA A100-SXM4-40GB"] * 2, d
assert d["devices"][1]["mem_total"] == 40 << 30 and d["devices"][1]["compute_capability"] == "8.0", d
PY
MLRT_HOSTNAME=hostB "$MLRUN" devices >"$TMP/b.table" || fail "mlrun devices, hostB"
MLRT_DEVICE_INVENTORY=$TMP/b.json MLRT_HOSTNAME=other "$MLRUN" devices | sed 's/^host other:/host hostB:/' |
	cmp -s - "$TMP/b.table" || fail "the --json output read back differs: $(cat "$TMP/b.table")"
echo "ok: mlrun devices shows the file's inventory; its --json reads back the same"

# One host: each unmet requirement refused, naming the host, nothing started.
refused() { # MESSAGE MLRUN-OPTIONS...: the job is refused with MESSAGE
	local want=$1
	shift
	rm -f "$TMP/started"
	MLRT_HOSTNAME=hostA "$MLRUN" "$@" -- sh -c 'touch "$0"' "$TMP/started" >"$TMP/out" 2>"$TMP/err" &&
		fail "mlrun $*: accepted"
	grep -qF "mlrun: $want; nothing was started" "$TMP/err" || fail "mlrun $*: $(cat "$TMP/err")"
	[ ! -e "$TMP/started" ] || fail "mlrun $*: a worker started"
}
refused "host hostA has 2 GPUs; the job needs 3 (3 processes x --gpus-per-proc 1)" \
	--gpus-per-proc 1 -np 3
refused "host hostA has 2 GPUs; the job needs 4 (2 processes x --gpus-per-proc 2)" \
	--gpus-per-proc 2 -np 2
refused "host hostA: GPU 0 (NVIDIA H100 80GB HBM3) has 81920 MiB; the job needs 102400 MiB per GPU (--gpu-mem)" \
	--gpus-per-proc 1 --gpu-mem 100GiB -np 2
refused "host hostA: the driver supports CUDA 12.4; the job needs 12.8" \
	--gpus-per-proc 1 --cuda 12.8 -np 1
echo "ok: one host: too few GPUs, too little memory, too old a driver: refused"

# Several hosts (agents started by the head through --rsh): one host short
# of memory refuses, and no worker starts anywhere.
port=$((20000 + RANDOM % 12000))
on_hosts() { # MLRUN-OPTIONS... -- PROGRAM...: hostA and hostB, 2 workers each
	port=$((port + 1))
	timeout 120 "$MLRUN" -H hostA:2,hostB:2 --rsh 'env MLRT_TEST_HOST={host}' \
		--rdzv-endpoint "127.0.0.1:$port" "$@"
}
rm -f "$TMP/started"
on_hosts --gpus-per-proc 1 --gpu-mem 60GiB -- sh -c 'touch "$0"' "$TMP/started" >"$TMP/out" 2>"$TMP/err" &&
	fail "2 hosts: a job needing 60 GiB per GPU started on 40 GiB GPUs"
grep -qF "mlrun: host hostB: GPU 0 (NVIDIA A100-SXM4-40GB) has 40960 MiB; the job needs 61440 MiB per GPU (--gpu-mem); nothing was started" \
	"$TMP/err" || fail "2 hosts: refusal: $(cat "$TMP/err")"
[ ! -e "$TMP/started" ] || fail "2 hosts: a worker started although hostB refused"
on_hosts --cuda 12.4 -- true >"$TMP/out" 2>"$TMP/err" && fail "2 hosts: --cuda 12.4 accepted on hostB's 12.2"
grep -qF "host hostB: the driver supports CUDA 12.2; the job needs 12.4" "$TMP/err" ||
	fail "2 hosts: --cuda refusal: $(cat "$TMP/err")"
echo "ok: 2 hosts: the host that cannot meet the job is named, no worker starts"

# Every host's inventory, asked through --rsh: tables, and --json an array
# that reads back as a multi-host inventory file; a host that fails named.
"$MLRUN" devices -H hostA,hostB --rsh 'env MLRT_TEST_HOST={host}' >"$TMP/all.table" 2>"$TMP/err" ||
	fail "mlrun devices -H: $(cat "$TMP/err")"
grep -q '^host hostA: 2 CUDA devices (driver CUDA 12.4, runtime 13.0)$' "$TMP/all.table" &&
	grep -q '^host hostB: 2 CUDA devices (driver CUDA 12.2, runtime 13.0)$' "$TMP/all.table" ||
	fail "mlrun devices -H: $(cat "$TMP/all.table")"
"$MLRUN" devices -H hostA,hostB --rsh 'env MLRT_TEST_HOST={host}' --json >"$TMP/all.json" ||
	fail "mlrun devices -H --json"
MLRT_DEVICE_INVENTORY=$TMP/all.json MLRT_HOSTNAME=hostB "$MLRUN" devices | cmp -s - "$TMP/b.table" ||
	fail "mlrun devices -H --json read back: $(cat "$TMP/all.json")"
"$MLRUN" devices -H hostA,hostC --rsh 'env MLRT_TEST_HOST={host}' >"$TMP/out" 2>"$TMP/err" &&
	fail "mlrun devices -H with an unknown host succeeded"
grep -qF 'mlrun devices: host hostC: `mlrun devices --json` there exited with 1' "$TMP/err" &&
	grep -q '^host hostA: ' "$TMP/out" || fail "mlrun devices -H, hostC failing: $(cat "$TMP/out" "$TMP/err")"
echo "ok: mlrun devices -H: every host's inventory (table; --json reads back); a failing host named"

# Jobs that fit: each worker gets its own GPUs by local rank; under a
# scheduler that gave mlrun some GPUs, entries of that list.
on_hosts --gpus-per-proc 1 --gpu-mem 40GiB --cuda 12.2 --tag-output -- \
	sh -c 'echo "visible=$CUDA_VISIBLE_DEVICES"' >"$TMP/out" 2>"$TMP/err" ||
	fail "2 hosts, 1 GPU each: $(cat "$TMP/err")"
for want in '[0]: visible=0' '[1]: visible=1' '[2]: visible=0' '[3]: visible=1'; do
	grep -qxF "$want" "$TMP/out" || fail "2 hosts: no '$want': $(cat "$TMP/out")"
done
CUDA_VISIBLE_DEVICES=4,6 on_hosts --gpus-per-proc 1 --tag-output -- \
	sh -c 'echo "visible=$CUDA_VISIBLE_DEVICES"' >"$TMP/out" 2>"$TMP/err" ||
	fail "2 hosts under CUDA_VISIBLE_DEVICES=4,6: $(cat "$TMP/err")"
for want in '[0]: visible=4' '[1]: visible=6' '[2]: visible=4' '[3]: visible=6'; do
	grep -qxF "$want" "$TMP/out" || fail "under CUDA_VISIBLE_DEVICES=4,6: no '$want': $(cat "$TMP/out")"
done
MLRT_HOSTNAME=hostA "$MLRUN" --gpus-per-proc 2 -np 1 --tag-output -- \
	sh -c 'echo "visible=$CUDA_VISIBLE_DEVICES"' >"$TMP/out" 2>"$TMP/err" || fail "2 GPUs per process"
grep -qxF '[0]: visible=0,1' "$TMP/out" || fail "2 GPUs per process: $(cat "$TMP/out")"
echo "ok: workers get their own GPUs (0 / 1; 4 / 6 under CUDA_VISIBLE_DEVICES=4,6; 0,1 with 2 each)"

# Malformed inventories: refused, saying which file and what is wrong.
bad() { # TEXT MESSAGE: an inventory file holding TEXT is refused with MESSAGE
	printf '%s\n' "$1" >"$TMP/bad.json"
	MLRT_DEVICE_INVENTORY=$TMP/bad.json "$MLRUN" --gpus-per-proc 1 -np 1 true 2>"$TMP/err" &&
		fail "inventory '$1' accepted"
	grep -qF "mlrun: MLRT_DEVICE_INVENTORY=$TMP/bad.json: $2" "$TMP/err" ||
		fail "inventory '$1': $(cat "$TMP/err")"
	grep -q "cannot tell its GPUs" "$TMP/err" || fail "inventory '$1': no refusal: $(cat "$TMP/err")"
}
bad '{"host": "x", "devices": [' "line 2: "
bad '{"host": "x", "devices": [{"name": "g"}]}' "device 0: "
bad '{"host": "x", "cuda_driver": "twelve", "devices": []}' '"devices" must be an array, and "cuda_driver" and "cuda_runtime" MAJOR.MINOR or "none"'
bad '[{"host": "elsewhere", "devices": []}]' "no entry with \"host\": \"$(hostname)\""
MLRT_DEVICE_INVENTORY=$TMP/missing.json "$MLRUN" devices 2>"$TMP/err" && fail "a missing inventory file accepted"
grep -qF "MLRT_DEVICE_INVENTORY=$TMP/missing.json: line -1: unable to open" "$TMP/err" ||
	fail "missing inventory file: $(cat "$TMP/err")"
echo "ok: malformed inventory files refused, naming the file and the fault"
