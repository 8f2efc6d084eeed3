#!/usr/bin/env sh
# Install vidtray for this user (Linux and macOS) and start the tray at every login.
#
#   sh installer/install.sh [--gen] [--torch-index URL] [--no-menu] [--no-autostart] [--start] [SOURCE]
#
# SOURCE is what pip installs: a checkout folder, a wheel, or a requirement ("vidtray", the
# default; this script's own checkout when it is run from one). With pipx on PATH vidtray goes
# into its own pipx environment; otherwise into a venv at ~/.local/share/vidtray/venv with
# `vidtray` and `vidtray-tray` linked into ~/.local/bin. No sudo, nothing outside your home.
#
#   --gen               also install the generation stack (torch, diffusers, transformers)
#   --torch-index URL   install torch from this index first (e.g. https://download.pytorch.org/whl/cpu
#                       for the CPU build, or the CUDA index that fits your driver)
#   --no-menu           Linux: skip the `linux` extra (PyGObject); the tray icon then has no menu
#   --no-autostart      do not start the tray at login
#   --start             start the tray now
#
# Environment: PYTHON (default python3), VIDTRAY_HOME (venv parent, default ~/.local/share/vidtray),
# VIDTRAY_BIN (default ~/.local/bin); VIDTRAY_INSTALL_VENV_ARGS / VIDTRAY_INSTALL_PIP_ARGS are passed to
# `python -m venv` / `pip install` (offline installs, tests).
set -eu

PYTHON=${PYTHON:-python3}
VIDTRAY_HOME=${VIDTRAY_HOME:-"$HOME/.local/share/vidtray"}
VIDTRAY_BIN=${VIDTRAY_BIN:-"$HOME/.local/bin"}
GEN=0 MENU=1 AUTOSTART=1 START=0 TORCH_INDEX="" SOURCE=""

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/pyproject.toml" ] && grep -q '^name = "vidtray"' "$here/pyproject.toml"; then
    SOURCE=$here
fi

while [ $# -gt 0 ]; do
    case $1 in
        --gen) GEN=1 ;;
        --torch-index) TORCH_INDEX=${2:?--torch-index needs a URL}; shift ;;
        --no-menu) MENU=0 ;;
        --no-autostart) AUTOSTART=0 ;;
        --start) START=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) SOURCE=$1 ;;
    esac
    shift
done
SOURCE=${SOURCE:-vidtray}

say() { printf 'vidtray install: %s\n' "$*"; }
die() { printf 'vidtray install: error: %s\n' "$*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON is missing or older than Python 3.11 (set PYTHON=/path/to/python3.11+)"

extras=""
if [ "$(uname -s)" = Linux ] && [ $MENU = 1 ]; then
    # PyGObject (the tray menu) builds from source against these; without them the tray still runs, icon only.
    if command -v pkg-config >/dev/null && pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null; then
        extras="linux"
    else
        say "no tray menu: PyGObject cannot build here. For the menu, install the build parts and rerun:"
        say "  Debian/Ubuntu: sudo apt install libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0 python3-dev"
        say "  Fedora:        sudo dnf install gobject-introspection-devel cairo-gobject-devel pkgconf-pkg-config gtk3"
    fi
fi
[ $GEN = 1 ] && extras="${extras:+$extras,}gen"

# A folder or wheel is installed by path; extras go in brackets after it.
spec=$SOURCE
[ -n "$extras" ] && spec="$SOURCE[$extras]"

if command -v pipx >/dev/null 2>&1; then
    say "installing $spec with pipx"
    pip_args=${VIDTRAY_INSTALL_PIP_ARGS:-}
    [ -n "$TORCH_INDEX" ] && pip_args="$pip_args --extra-index-url $TORCH_INDEX"
    pipx install --force ${pip_args:+--pip-args="$pip_args"} "$spec"
    bin_dir=$(pipx environment --value PIPX_BIN_DIR 2>/dev/null || echo "$VIDTRAY_BIN")
    VIDTRAY="$bin_dir/vidtray"
else
    venv="$VIDTRAY_HOME/venv"
    say "installing $spec into $venv"
    mkdir -p "$VIDTRAY_HOME" "$VIDTRAY_BIN"
    # shellcheck disable=SC2086
    "$PYTHON" -m venv ${VIDTRAY_INSTALL_VENV_ARGS:-} "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --upgrade pip ${VIDTRAY_INSTALL_PIP_ARGS:-} 2>/dev/null || true
    if [ -n "$TORCH_INDEX" ] && [ $GEN = 1 ]; then
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet --index-url "$TORCH_INDEX" torch ${VIDTRAY_INSTALL_PIP_ARGS:-}
    fi
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet ${VIDTRAY_INSTALL_PIP_ARGS:-} "$spec"
    for tool in vidtray vidtray-tray; do
        ln -sf "$venv/bin/$tool" "$VIDTRAY_BIN/$tool"
    done
    VIDTRAY="$venv/bin/vidtray"
fi

[ -x "$VIDTRAY" ] || die "installed, but $VIDTRAY is missing"
say "installed: $("$VIDTRAY" --version)"
case ":$PATH:" in
    *":$VIDTRAY_BIN:"*) ;;
    *) say "add $VIDTRAY_BIN to PATH to type 'vidtray' (for example in ~/.profile)" ;;
esac

if [ $AUTOSTART = 1 ]; then
    "$VIDTRAY" autostart enable
else
    say "start on login left off (turn on later: vidtray autostart enable)"
fi

if [ $START = 1 ]; then
    # Detached from this shell, output in the log file (vidtray doctor shows where).
    nohup "$(dirname "$VIDTRAY")/vidtray-tray" >/dev/null 2>&1 &
    say "tray started"
fi
say "done. Try: vidtray doctor"
