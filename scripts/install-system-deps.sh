#!/usr/bin/env bash
# Install the Debian packages hushscribe's build, tests and tools need, when missing.
# PyAV bundles FFmpeg, so no system ffmpeg is needed.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The offline-install test makes a venv with the system Python, as an air-gapped host would.
if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need+=(python3-venv)
fi
command -v make >/dev/null || need+=(make)
# Tests start real servers and real network namespaces: slapd (LDAP), iproute2 (ip netns).
command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
# PostgreSQL's server binaries (initdb, pg_ctl in /usr/lib/postgresql/<version>/bin): the tests
# start a throwaway cluster of their own in a temp dir, as the package's `postgres` user.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# Browser tests drive a real Chromium (Python Playwright, executable_path=/usr/bin/chromium); a
# small CJK font so the Chinese page's screenshots show glyphs.
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# The air-gap kit's tests check its files with the real tools and capture packets: tcpdump (the
# zero-egress proof), nft (firewall rules), nginx -t (the proxy sample), systemd-analyze (the unit).
command -v tcpdump >/dev/null || [ -x /usr/bin/tcpdump ] || need+=(tcpdump)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} — install them (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # slapd's package configures a system directory of its own: none is wanted (tests run their
  # own slapd on a free port), so its post-install questions take their defaults.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" slapd "* ]]; then
    service slapd stop >/dev/null 2>&1 || pkill -x slapd || true
  fi
  if [[ " ${need[*]} " == *" postgresql "* ]]; then  # its package starts a cluster: not wanted
    service postgresql stop >/dev/null 2>&1 || true
    pg_lsclusters -h 2>/dev/null | while read -r version name _; do
      pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
    done
  fi
  if [[ " ${need[*]} " == *" nginx "* ]]; then  # its package starts a default site: not wanted
    service nginx stop >/dev/null 2>&1 || pkill -x nginx || true
  fi
  echo "installed: ${need[*]}"
fi
