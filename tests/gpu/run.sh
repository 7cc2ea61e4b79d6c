#!/usr/bin/env bash
# The checks that need a GPU, in one go (for a machine lent with one):
# builds with CUDA and runs the device tests, printing the inventory.
# Usage: bash tests/gpu/run.sh   (from the repository root)
set -euo pipefail
scripts/install-deps
[ -d build-gpu ] || meson setup build-gpu -Dcuda=enabled >/dev/null
meson compile -C build-gpu >/dev/null
build-gpu/launcher/mlrun devices
build-gpu/launcher/mlrun devices --json
meson test -C build-gpu --print-errorlogs devices
# Collectives on device memory (NCCL and staged), then their benchmark.
meson test -C build-gpu --print-errorlogs --suite gpu coll_device coll_device_fault
meson test -C build-gpu --benchmark --verbose --suite bench gpu_allreduce_staged
