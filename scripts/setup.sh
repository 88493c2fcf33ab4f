#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine lacks to build and run weir's
# datapath (clang-19 for the BPF programs, libbpf headers, bpftool, iproute2,
# ethtool), clang-format-19 (the C style CI checks), plus any packages named as
# arguments, and mounts bpffs.
# Idempotent; needs root. Usage: scripts/setup.sh [EXTRA_PACKAGE...]
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh: run as root (it installs packages and mounts bpffs)" >&2
  exit 1
fi

packages=(clang-19 clang-format-19 libbpf-dev bpftool iproute2 ethtool gcc libc6-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.95 (rustup)" >&2; exit 1; }

if ! mountpoint -q /sys/fs/bpf; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpffs /sys/fs/bpf
fi
