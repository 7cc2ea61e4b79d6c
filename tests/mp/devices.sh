# `mlrun devices` lists this host's GPUs (a table and --json that agree);
# GPU requirements a host cannot meet refuse the job before anything
# starts, naming the host; with GPUs, each worker gets its own through
# CUDA_VISIBLE_DEVICES.  Skips (77) when mlrun was built without CUDA.
# Also run against the fake CUDA and NVML with two GPUs (devices_fake).
. "$(dirname "$0")/lib.sh"

if ! "$MLRUN" devices >"$TMP/table" 2>"$TMP/err"; then
	grep -q 'built without CUDA' "$TMP/err" && { echo "skip: mlrun was built without CUDA"; exit 77; }
	fail "mlrun devices: $(cat "$TMP/err")"
fi
host=$(hostname)
n=$(sed -n "s/^host $host: \([0-9]*\) CUDA devices\{0,1\} .*/\1/p" "$TMP/table")
[ -n "$n" ] || fail "no summary line: $(cat "$TMP/table")"
"$MLRUN" devices --json >"$TMP/json" || fail "mlrun devices --json failed"
python3 - "$TMP/json" "$n" "$host" <<'PY' || fail "--json disagrees: $(cat "$TMP/json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["host"] == sys.argv[3], d["host"]
assert len(d["devices"]) == int(sys.argv[2]), d["devices"]
for g in d["devices"]:
    assert g["uuid"].startswith("GPU-") and g["mem_total"] > 0 and g["mem_free"] <= g["mem_total"]
PY
echo "mlrun devices: $n device(s), table and JSON agree"

# Against the fake CUDA and NVML (tests/gpu/fake, test devices_fake):
# every field as the fakes define it, and what CUDA_VISIBLE_DEVICES hides
# is not listed.
if [ -n "${FAKE_CUDA_DEVICES:-}" ]; then
	[ "$n" -eq "$FAKE_CUDA_DEVICES" ] || fail "$n devices, the fake has $FAKE_CUDA_DEVICES"
	python3 - "$TMP/json" <<'PY' || fail "fields: $(cat "$TMP/json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["cuda_driver"] == "13.0", d["cuda_driver"]
for i, g in enumerate(d["devices"]):
    want = {"index": i, "name": f"fake CUDA device {i} (tests/gpu/fake)",
            "uuid": f"GPU-face0000-0000-0000-0000-0000000000{i:02x}",
            "pci_bus_id": f"0000:{i + 1:02x}:00.0", "mem_total": 80 << 30,
            "mem_free": 79 << 30, "compute_capability": "9.0", "util_percent": 30 + i,
            "mem_used": 1 << 30}
    assert g == want, (g, want)
PY
	grep -q "^1   fake CUDA device 1 (tests/gp GPU-face0000-0000-0000-0000-000000000001 0000:02:00.0 *81920 *80896 9.0 *31%$" \
		"$TMP/table" || fail "table row of GPU 1: $(cat "$TMP/table")"
	CUDA_VISIBLE_DEVICES=1 "$MLRUN" devices --json >"$TMP/json1" || fail "mlrun devices under CUDA_VISIBLE_DEVICES=1"
	python3 - "$TMP/json1" <<'PY' || fail "CUDA_VISIBLE_DEVICES=1: $(cat "$TMP/json1")"
import json, sys
d = json.load(open(sys.argv[1]))["devices"]
assert len(d) == 1 and d[0]["index"] == 0 and d[0]["uuid"].endswith("000000000001"), d
PY
	echo "fake GPUs: names, UUIDs, PCI ids, memory (CUDA and NVML), utilisation as the fakes define them"
fi

# More GPUs than the host has: refused, naming the host, nothing started.
want=$((n + 1))
"$MLRUN" --gpus-per-proc 1 -np $want -- sh -c 'touch "$0"' "$TMP/started" >"$TMP/out" 2>"$TMP/err" &&
	fail "a job needing $want GPUs started on a host with $n"
grep -q "host $host has $n GPUs\{0,1\}; the job needs $want ($want processes x --gpus-per-proc 1); nothing was started" \
	"$TMP/err" || fail "refusal message: $(cat "$TMP/err")"
[ ! -e "$TMP/started" ] || fail "a worker started although the job was refused"
"$MLRUN" --gpus-per-proc 0 --cuda 99.9 -np 1 true 2>"$TMP/err" && fail "--cuda 99.9 accepted"
grep -q "host $host: the driver supports CUDA .*; the job needs 99.9" "$TMP/err" ||
	fail "--cuda refusal: $(cat "$TMP/err")"
for bad in "--gpu-mem 40XB" "--gpu-mem -1GiB" "--cuda 12" "--gpus-per-proc x"; do
	"$MLRUN" $bad -np 1 true 2>"$TMP/err"
	[ $? -eq 2 ] || fail "mlrun $bad: want exit 2: $(cat "$TMP/err")"
done
echo "requirements a host cannot meet: refused before anything starts"

if [ "$n" -ge 1 ]; then
	"$MLRUN" --gpus-per-proc 1 -np 1 --tag-output -- sh -c 'echo "visible=$CUDA_VISIBLE_DEVICES"' \
		>"$TMP/out" || fail "a job with 1 GPU failed"
	grep -q '^\[0\]: visible=0$' "$TMP/out" || fail "CUDA_VISIBLE_DEVICES: $(cat "$TMP/out")"
	"$MLRUN" --gpus-per-proc 1 --gpu-mem 100TiB -np 1 true 2>"$TMP/err" && fail "--gpu-mem 100TiB accepted"
	grep -q "host $host: GPU 0 (.*) has [0-9]* MiB; the job needs 104857600 MiB per GPU" "$TMP/err" ||
		fail "--gpu-mem refusal: $(cat "$TMP/err")"
	echo "1 GPU: CUDA_VISIBLE_DEVICES=0; --gpu-mem beyond the GPU refused"
fi
if [ "$n" -ge 2 ]; then
	"$MLRUN" --gpus-per-proc 1 --gpu-mem 1GiB -np 2 --tag-output -- sh -c 'echo "visible=$CUDA_VISIBLE_DEVICES"' \
		>"$TMP/out" || fail "a job with 1 GPU per process failed"
	grep -q '^\[0\]: visible=0$' "$TMP/out" && grep -q '^\[1\]: visible=1$' "$TMP/out" ||
		fail "CUDA_VISIBLE_DEVICES: $(cat "$TMP/out")"
	echo "--gpus-per-proc 1: each worker sees its own GPU"
fi
