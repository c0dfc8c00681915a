#!/usr/bin/env bash
# The edge tests on arm64 code: a Debian bookworm arm64 userland (mmdebstrap --variant=extract) with the aarch64
# wheels of the edge dependencies, run by qemu-aarch64-static; the tests run in .venv-edge and every antiphon-edge
# command of theirs runs on the emulated aarch64 Python (ANTIPHON_EDGE_PYTHON).
#
#   tests/edge/arm64.sh EDGE_PYTHON SERVER_PYTHON EDGE_FILES [pytest -k expression]
#
# The root is cached under runs/arm64 (rebuilt when the wheel list changes); without mmdebstrap or qemu-user-static
# the run is skipped with a message.
set -euo pipefail
edge_python=$1 server_python=$2 files=$3 selection=${4:-}
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=$repo/runs/arm64
root=$dir/root
site=$dir/site
wheels=("numpy<2" "tflite-runtime==2.14.*" "onnxruntime>=1.20" "grpcio>=1.85.1" "protobuf>=7.35.1" "websockets>=13" "pillow>=10")

if ! command -v mmdebstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    echo "edge-arm64: skipped: mmdebstrap and qemu-user-static are not installed (make system-deps installs them)"
    exit 0
fi

key=$(printf '%s\n' bookworm python3,libstdc++6,libgcc-s1 "${wheels[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$dir/.ready" 2>/dev/null)" != "$key" ]; then
    echo "edge-arm64: building the arm64 root under runs/arm64 (once)"
    rm -rf "$root" "$site" "$dir/.ready"
    mkdir -p "$dir"
    # tflite-runtime needs libstdc++6 in the root
    mmdebstrap --quiet --variant=extract --architectures=arm64 --include=python3,libstdc++6,libgcc-s1 bookworm "$root"
    # onnxruntime 1.28 and later read /proc/cpuinfo at import and crash under the emulator unless it describes an
    # ARM CPU; qemu -L serves the root's copy (this one: a Cortex-A72, a Raspberry Pi 4's core)
    mkdir -p "$root/proc"
    printf 'processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' \
        >"$root/proc/cpuinfo"
    "$edge_python" -m pip install -q --disable-pip-version-check --target "$site" \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 \
        --only-binary=:all: --python-version 3.11 "${wheels[@]}"
    echo "$key" >"$dir/.ready"
fi

# a clean environment: the host's variables (PYTHONHOME, LD_*, a virtualenv's) mean nothing to the emulated Python
export ANTIPHON_EDGE_PYTHON="env -i PATH=/usr/bin:/bin HOME=/tmp PYTHONPATH=$site:$repo:$repo/proto qemu-aarch64-static -L $root $root/usr/bin/python3"
export ANTIPHON_EDGE_FILES=$files ANTIPHON_EDGE_VENV=1 ANTIPHON_SERVER_PYTHON=$server_python
export ANTIPHON_TEST_TIMEOUT_UNIT=4  # emulated commands take seconds
$ANTIPHON_EDGE_PYTHON -c 'import platform; print("edge-arm64: emulated", platform.machine(), platform.python_version())'
cd "$repo"
exec "$(dirname "$edge_python")/pytest" tests/edge ${selection:+-k "$selection"}
