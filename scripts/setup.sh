#!/usr/bin/env bash
# netlab set-up: installs everything netlab, its tests and its labs need on Debian 12.
# Idempotent and fast once done: `make demo` and `make test` run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "netlab setup: run as root (sudo make ...): it installs packages and builds namespaces" >&2
  exit 1
fi

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# 1. Debian packages.
PKGS=(iproute2 iptables ipset conntrack nftables bpfcc-tools python3-bpfcc curl iperf3 tcpdump
      tshark iputils-ping dnsutils openssl socat python3-venv python3-pip mininet bridge-utils prometheus
      chromium vagrant psmisc procps graphviz wrk)
# Kernel headers for bcc: the running kernel's package when Debian has it (a stock box),
# else the distro's current headers with the links mesh-facts §11 describes.
KVER=$(uname -r)
if apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then
  PKGS+=("linux-headers-$KVER")
else
  PKGS+=(linux-headers-amd64)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  # mininet only recommends Open vSwitch; netlab's benchmark uses its Linux-bridge switch.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # A kernel-header package may have just been installed: redo its links below.
fi

# 2. Kernel headers where bcc looks for them.
MODDIR=/lib/modules/$KVER
if [ ! -e "$MODDIR/build/include/linux/kconfig.h" ] && [ ! -e "$MODDIR/build/Makefile" ]; then
  arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$arch" ]; then
    common=${arch%-amd64}-common
    say "linking kernel headers $arch for bcc (running kernel $KVER has no Debian package)"
    mkdir -p "$MODDIR"
    ln -sfn "$arch" "$MODDIR/build"
    [ -d "$common" ] && ln -sfn "$common" "$MODDIR/source"
  else
    say "warning: no kernel headers found; BPF tracing will explain itself in 'netlab doctor'"
  fi
fi

# 3. tracefs, for tracepoint format files (drop-reason names).
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "warning: could not mount tracefs"
fi

# 4. The virtualenv: Debian's python (bcc lives in its dist-packages).
stamp=.venv/.netlab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
  say "creating .venv from /usr/bin/python3 with system site packages"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing netlab into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
# `sudo netlab ...` should work from anywhere.
ln -sfn "$PWD/.venv/bin/netlab" /usr/local/bin/netlab
