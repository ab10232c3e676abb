#!/usr/bin/env bash
# Install the Debian packages the C runtime, the firmware builds and the emulated boards need:
# host gcc, the ARM cross toolchain with newlib, QEMU for Cortex-M boards, and clang with libFuzzer and
# the sanitizer runtimes (libclang-rt-14-dev: libclang_rt.fuzzer, asan, ubsan) for the device-link
# fuzzer (firmware_gen/fuzz). Needs root (or sudo).
set -euo pipefail
packages=(gcc make gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "toolchain: all of ${packages[*]} installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "toolchain: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
arm-none-eabi-gcc --version | head -1
qemu-system-arm --version | head -1
clang --version | head -1
