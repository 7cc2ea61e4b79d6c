# The device a process works on, chosen at mlrt_init (MLRT_DEVICE,
# docs/devices.md), against the fake CUDA (FAKE_CUDA_DEVICES devices,
# preloaded by meson): none by default; the worker's own GPU (ordinal 0)
# when mlrun --gpus-per-proc bound one; local rank modulo the devices with
# MLRT_DEVICE=local; an ordinal; a choice that cannot be met fails init,
# saying why.
. "$(dirname "$0")/../../mp/lib.sh"

export FAKE_CUDA_DEVICES=2
devices() { # MLRUN-OPTIONS...: run probe device with 2 ranks; $TMP/out
	timeout 60 "$MLRUN" -np 2 --no-tag-output "$@" -- "$PROBE" device >"$TMP/out" 2>"$TMP/err" ||
		fail "mlrun $*: $(cat "$TMP/out" "$TMP/err")"
}
expect() { # LINE...: each line is in $TMP/out
	for l in "$@"; do
		grep -qxF "$l" "$TMP/out" || fail "no '$l' in: $(cat "$TMP/out" "$TMP/err")"
	done
}

devices
expect "device: rank 0 local 0 device -1 visible -" "device: rank 1 local 1 device -1 visible -"
echo "ok: no device chosen by default"

MLRT_DEVICE=local devices
expect "device: rank 0 local 0 device 0 visible -" "device: rank 1 local 1 device 1 visible -"
MLRT_DEVICE=1 devices
expect "device: rank 0 local 0 device 1 visible -" "device: rank 1 local 1 device 1 visible -"
echo "ok: MLRT_DEVICE=local: ranks 0 and 1 on devices 0 and 1; MLRT_DEVICE=1: both on 1"

# Bound by mlrun (the inventory from a file, as the fake has no UUIDs):
# each worker sees its own GPU, and works on it.
cat >"$TMP/inv.json" <<EOF
{"host": "any", "cuda_driver": "13.0", "cuda_runtime": "13.0", "devices": [
 {"name": "g0", "uuid": "GPU-0", "pci_bus_id": "0000:01:00.0", "mem_total": 1073741824, "compute_capability": "9.0"},
 {"name": "g1", "uuid": "GPU-1", "pci_bus_id": "0000:02:00.0", "mem_total": 1073741824, "compute_capability": "9.0"}]}
EOF
MLRT_DEVICE_INVENTORY=$TMP/inv.json devices --gpus-per-proc 1
expect "device: rank 0 local 0 device 0 visible 0" "device: rank 1 local 1 device 0 visible 1"
echo "ok: --gpus-per-proc 1: each worker on its own GPU, ordinal 0 of what it sees"

refused() { # MLRT_DEVICE MESSAGE: a world of one fails init with MESSAGE
	MLRT_DEVICE=$1 timeout 60 "$PROBE" device >"$TMP/out" 2>"$TMP/err" && fail "MLRT_DEVICE=$1 accepted"
	grep -qF "$2" "$TMP/err" || fail "MLRT_DEVICE=$1: $(cat "$TMP/err")"
}
refused 2 "device: MLRT_DEVICE=2, but this process sees 2 CUDA devices (CUDA_VISIBLE_DEVICES=(unset))"
refused gpu1 "device: MLRT_DEVICE=gpu1 is not auto, local, none or a device ordinal"
FAKE_CUDA_DEVICES=1 MLRT_DEVICE=local timeout 60 "$PROBE" device >"$TMP/out" 2>&1 ||
	fail "MLRT_DEVICE=local, 1 device: $(cat "$TMP/out")"
expect "device: rank 0 local 0 device 0 visible -"
echo "ok: an ordinal beyond the devices and a malformed MLRT_DEVICE fail init, saying why"
