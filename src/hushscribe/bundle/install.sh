#!/usr/bin/env bash
# Install hushscribe from this offline bundle, or upgrade an install made from an older one.
# Never touches the network: pip installs from ./wheels with --no-index and reads no pip
# configuration of this host; models come from ./models.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: ./install.sh [--prefix DIR] [--data-dir DIR] [--config FILE] [--python PY]

  --prefix DIR     where hushscribe goes; its virtual environment is DIR/venv
                   (default /opt/hushscribe)
  --data-dir DIR   the service's data: models, database, audit log (default /var/lib/hushscribe)
  --config FILE    config file; a starter one is written if it does not exist
                   (default PREFIX/hushscribe.toml)
  --python PY      the Python that builds the environment (default python3); it must be the
                   version the bundle's wheels are for (see bundle.json)

Run it again from a newer bundle to upgrade: unchanged models are kept, the config is left alone.
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }
absolute() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
prefix=/opt/hushscribe
data_dir=/var/lib/hushscribe
config=
py=python3
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --data-dir) data_dir=${2:?--data-dir needs a directory}; shift 2 ;;
    --data-dir=*) data_dir=${1#*=}; shift ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --python) py=${2:?--python needs an interpreter}; shift 2 ;;
    --python=*) py=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
prefix=$(absolute "$prefix")
data_dir=$(absolute "$data_dir")
config=$(absolute "${config:-$prefix/hushscribe.toml}")
venv=$prefix/venv

# Only this bundle counts: no pip configuration, index, cache or Python path of this host.
while IFS= read -r var; do
  case $var in PIP_* | PYTHONPATH | PYTHONHOME | PYTHONSTARTUP | PYTHONUSERBASE) unset "$var" ;; esac
done < <(compgen -e)
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_CACHE_DIR=1 PYTHONNOUSERSITE=1

command -v "$py" >/dev/null || die "no Python '$py' here (give one with --python)"

echo "== checking the bundle"
"$py" -I "$here/verify_bundle.py" "$here" || die "the bundle is damaged (see above); nothing was installed"

meta=$("$py" -I - "$here/bundle.json" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as fh:
    b = json.load(fh)
print(b["hushscribe_version"])
print(b["python"])
print(",".join(b["extras"]))
print(" ".join(m["name"] for m in b["models"]))
PY
)
mapfile -t meta <<<"$meta"
version=${meta[0]}
bundle_py=${meta[1]}
extras=${meta[2]:-}
read -r -a models <<<"${meta[3]:-}"

have_py=$("$py" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have_py" = "$bundle_py" ] ||
  die "this bundle's wheels are for Python $bundle_py, $py is $have_py: give --python python$bundle_py, or build a bundle with --python $have_py"

shopt -s nullglob
debs=("$here"/debs/*.deb)
shopt -u nullglob
if [ ${#debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== Debian packages from debs/"
    todo=()
    for deb in "${debs[@]}"; do
      package=$(dpkg-deb -f "$deb" Package)
      if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
        echo "   $package is installed already: kept"  # never downgraded by an older bundle
      else
        todo+=("$deb")
      fi
    done
    if [ ${#todo[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive dpkg -i "${todo[@]}" ||
        die "dpkg could not install the packages in debs/ (see above): they must be built for this host's Debian release, and include their dependencies"
    fi
  else
    echo "note: not root, so the packages in debs/ were not installed (as root: dpkg -i debs/*.deb)"
  fi
fi

"$py" -I -c 'import ensurepip, venv' 2>/dev/null ||
  die "$py has no venv module: install python3-venv (or build the bundle with --deb python3-venv)"

echo "== Python environment $venv"
upgrade=0
if [ -x "$venv/bin/python" ]; then
  if [ "$("$venv/bin/python" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$bundle_py" ]; then
    upgrade=1
  else
    echo "   replacing it: it is not Python $bundle_py"
    rm -rf "$venv"
  fi
fi
if [ $upgrade = 0 ]; then
  mkdir -p "$prefix"
  "$py" -I -m venv "$venv"
fi
requirement="hushscribe==$version"
[ -z "$extras" ] || requirement="hushscribe[$extras]==$version"
pip=("$venv/bin/python" -I -m pip --quiet)
echo "   installing $requirement from $(find "$here/wheels" -name '*.whl' | wc -l) wheels (a minute or two)"
"${pip[@]}" install --no-index --find-links "$here/wheels" --upgrade "$requirement"
if [ $upgrade = 1 ]; then
  # Same version number, other build (a bundle made from a newer checkout): take this one.
  "${pip[@]}" install --no-index --no-deps --force-reinstall "$here"/wheels/hushscribe-"$version"-*.whl
fi
hushscribe=("$venv/bin/hushscribe" --config "$config" --data-dir "$data_dir")
echo "   $("$venv/bin/hushscribe" --version) installed"

if [ ! -e "$config" ]; then
  echo "== writing a starter config $config"
  mkdir -p "$(dirname "$config")"
  "$venv/bin/python" -I - "$config" "$data_dir" "${models[0]:-}" <<'PY'
import json, os, sys
path, data_dir, model = sys.argv[1:4]
lines = [
    "# hushscribe configuration; every key is described in docs/configuration.md",
    f"data_dir = {json.dumps(data_dir)}",
    "",
    "[server]",
    'host = "127.0.0.1"',
    "port = 8000",
    "",
]
if model:
    lines += ["[engine]", f"default_model = {json.dumps(model)}", ""]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    fh.write("\n".join(lines))
PY
else
  echo "== keeping the config $config"
fi

mkdir -p "$data_dir"
for name in "${models[@]}"; do
  state=$("$venv/bin/python" -I - "$here/models/$name/manifest.json" "$data_dir/models/$name/manifest.json" <<'PY'
import json, sys
def files(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return {k: v["sha256"] for k, v in json.load(fh)["files"].items()}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
new, old = files(sys.argv[1]), files(sys.argv[2])
print("absent" if old is None else "same" if old == new else "different")
PY
  )
  case $state in
    same) echo "== model $name: already installed with the same files, kept" ;;
    absent)
      echo "== importing model $name"
      "${hushscribe[@]}" models import "$here/models/$name" --name "$name"
      ;;
    *)
      echo "== replacing model $name (its files differ from the installed one)"
      "${hushscribe[@]}" models import "$here/models/$name" --name "$name" --replace
      ;;
  esac
done

env_note=
case ",$extras," in
  *,gpu,*)
    # ctranslate2 loads libcublas.so.12 by name; the gpu extra's wheels put it in the venv.
    libs=$(find "$venv"/lib/python*/site-packages/nvidia -maxdepth 2 -type d -name lib 2>/dev/null | sort | paste -sd: - || true)
    if [ -n "$libs" ]; then
      printf 'LD_LIBRARY_PATH=%s\n' "$libs" >"$prefix/hushscribe.env"
      env_note="GPU: the CUDA libraries are in the venv; run with LD_LIBRARY_PATH=$libs
      (also in $prefix/hushscribe.env, for systemd's EnvironmentFile=)"
    fi
    ;;
esac

hs="$venv/bin/hushscribe --config $config"
cat <<EOF

hushscribe $version is installed in $venv; data in $data_dir, config $config.
Next steps:
  check the models:       $hs models list
  a first transcription:  $hs transcribe FILE --output-dir DIR
  start the service:      $hs serve --first-run-key
                          (the first start prints the admin password and an API key, once)
EOF
[ -z "$env_note" ] || echo "  $env_note"
if [ "$(id -u)" = 0 ]; then
  echo "  (files are owned by root; if the service runs as its own user: chown -R USER: $data_dir)"
fi
