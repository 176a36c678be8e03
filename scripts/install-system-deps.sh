#!/usr/bin/env bash
# Install the Debian packages hushscribe's build, tests and tools need, when missing.
# PyAV bundles FFmpeg, so no system ffmpeg is needed.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v make >/dev/null || need+=(make)
# Tests start real servers and real network namespaces: slapd (LDAP), iproute2 (ip netns).
command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
# Browser tests drive a real Chromium (Python Playwright, executable_path=/usr/bin/chromium); a
# small CJK font so the Chinese page's screenshots show glyphs.
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
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
  echo "installed: ${need[*]}"
fi
