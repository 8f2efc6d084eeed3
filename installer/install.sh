#!/usr/bin/env sh
# Install vidtray for this user from this checkout (Linux, macOS), put it in the app menu, start it.
#
#   sh installer/install.sh [--torch auto|cuda|cpu|none|URL] [--autostart | --no-autostart] [--no-start] [SOURCE]
#
# Makes a venv at ~/.local/share/vidtray/venv with a Python 3.11+ it finds (one that has the system's
# PyGObject, python3-gi, when there is one: the tray's menu then needs no compiler), installs vidtray
# with the generation stack into it, links `vidtray` and `vidtray-tray` into ~/.local/bin, adds the
# application menu entry (Linux), asks whether to start the tray at every login, and starts it.
# No sudo, nothing outside your home. Run it again to update; it reuses the venv.
#
#   --torch auto        (default) the CUDA build where `nvidia-smi` finds an NVIDIA GPU, else the CPU build;
#                       on macOS PyPI's build (Apple GPU through MPS)
#   --torch cuda        PyPI's Linux build (CUDA 12; a venv of about 6 GB); for another CUDA pass its index URL
#   --torch cpu         the CPU build from https://download.pytorch.org/whl/cpu (a 1.4 GB venv in all)
#   --torch none        no torch/diffusers: tray, watcher and cleanup only; nothing can be generated
#   --torch URL         torch from this package index (e.g. https://download.pytorch.org/whl/cu126)
#   --autostart         start the tray at every login without asking
#   --no-autostart      do not start it at login (turns an existing entry off)
#                       (neither: asks on a terminal, default yes; without a terminal: yes)
#   --no-start          do not start the tray now (default: start it when a desktop session is running)
#   --start             start it even when no desktop session is seen (DISPLAY, WAYLAND_DISPLAY unset)
#   SOURCE              what to install instead of this checkout: a vidtray wheel or source folder
#
# Environment: PYTHON (the Python to use; default: the first 3.11+ found, preferring one with PyGObject
# and Tk), VIDTRAY_HOME (default ~/.local/share/vidtray), VIDTRAY_BIN (default ~/.local/bin). pip's own
# variables (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX ...) apply to every pip call.
set -eu

VIDTRAY_HOME=${VIDTRAY_HOME:-"$HOME/.local/share/vidtray"}
VIDTRAY_BIN=${VIDTRAY_BIN:-"$HOME/.local/bin"}
CPU_INDEX=https://download.pytorch.org/whl/cpu
TORCH=auto AUTOSTART=ask START=auto SOURCE=""

say() { printf 'vidtray install: %s\n' "$*"; }
die() { printf 'vidtray install: error: %s\n' "$*" >&2; exit 1; }
usage() { printf 'install.sh: %s (see --help)\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --torch) [ $# -ge 2 ] || usage "--torch needs auto, cuda, cpu, none or an index URL"; TORCH=$2; shift ;;
        --torch=*) TORCH=${1#--torch=} ;;
        --autostart) AUTOSTART=yes ;;
        --no-autostart) AUTOSTART=no ;;
        --start) START=yes ;;
        --no-start) START=no ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) usage "unknown option $1" ;;
        *) [ -z "$SOURCE" ] || usage "one SOURCE only"; SOURCE=$1 ;;
    esac
    shift
done
case $TORCH in
    auto|cuda|cpu|none|http://*|https://*|file:*) ;;
    *) usage "--torch takes auto, cuda, cpu, none or an index URL, not '$TORCH'" ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$SOURCE" ]; then
    if ! grep -q '^name = "vidtray"' "$here/pyproject.toml" 2>/dev/null; then
        die "run this script from a clone of the vidtray repository, or pass a vidtray wheel or folder"
    fi
    SOURCE=$here
elif [ -e "$SOURCE" ]; then
    SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
else
    die "$SOURCE: no such wheel or folder (vidtray is not on PyPI: install from a clone or a wheel)"
fi

os=$(uname -s)
case $os in
    Linux|*BSD) ;;
    Darwin) ;;
    *) die "this script is for Linux and macOS; on Windows run installer\\install.ps1" ;;
esac

# The one question, asked first so the long part runs unattended.
if [ "$AUTOSTART" = ask ]; then
    if [ -t 0 ] && [ -t 1 ]; then
        printf 'Start the vidtray tray at every login? [Y/n] '
        read -r answer || answer=""
        case $answer in [Nn]*) AUTOSTART=no ;; *) AUTOSTART=yes ;; esac
    else
        AUTOSTART=yes
        say "start on login: on (the default: no terminal to ask on; --no-autostart leaves it off)"
    fi
fi

# -- a Python 3.11+ ---------------------------------------------------------------------------------------
# A venv's interpreter is judged by the one it was made from: a new venv is built from that one, and
# with --system-site-packages sees that one's packages, not the venv's.
BASE_PY='import sys; print(getattr(sys, "_base_executable", "") or sys.executable if sys.prefix != sys.base_prefix else sys.executable)'
# Compared by real path only: a venv is made from the path as found (Homebrew's real path changes on upgrade).
REAL_PY='import os, sys; print(os.path.realpath(sys.executable))'
has() { "$1" -E -c "$2" >/dev/null 2>&1; }
GI_CHECK='import gi; gi.require_version("Gtk", "3.0")'

if [ -n "${PYTHON:-}" ]; then
    candidates=$PYTHON
elif [ "$os" = Darwin ]; then
    # /usr/bin/python3 last: without the command line tools it is a stub that opens an install dialog.
    candidates="python3.13 python3.12 python3.11 /opt/homebrew/bin/python3 /usr/local/bin/python3 python3 /usr/bin/python3"
else
    candidates="python3 /usr/bin/python3 python3.13 python3.12 python3.11 /usr/local/bin/python3"
fi
best="" best_score=-1 any_old=""
for cand in $candidates; do
    exe=$(command -v "$cand" 2>/dev/null) || continue
    base=$("$exe" -E -c "$BASE_PY" 2>/dev/null) || continue
    if [ -z "$base" ] || [ ! -x "$base" ]; then continue; fi
    if ! has "$base" 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        any_old=$base
        continue
    fi
    has "$base" 'import ensurepip, venv' || { [ -n "${no_venv:-}" ] || no_venv=$base; continue; }
    score=0
    if [ "$os" = Darwin ] || has "$base" "$GI_CHECK"; then score=$((score + 2)); fi
    if has "$base" 'import tkinter'; then score=$((score + 1)); fi
    if [ "$score" -gt "$best_score" ]; then best=$base best_score=$score; fi
    if [ "$score" -eq 3 ]; then break; fi
done
if [ -z "$best" ]; then
    if [ -n "${no_venv:-}" ]; then
        die "$no_venv cannot make a venv. Debian/Ubuntu: sudo apt install python3-venv (then run this again)"
    fi
    if [ -n "$any_old" ]; then say "found only $any_old, older than 3.11"; fi
    die "vidtray needs Python 3.11 or newer. Debian 12+/Ubuntu 24.04+: sudo apt install python3 python3-venv;
  Fedora: sudo dnf install python3; macOS: https://www.python.org/downloads/ (or brew install python);
  then run this again (or point PYTHON=/path/to/python3.11+ at one)"
fi
PY=$best
say "Python: $PY ($("$PY" -E -c 'import platform; print(platform.python_version())'))"

# -- the tray's parts: PyGObject (menu, Linux) and Tk (prompt popup) --------------------------------------
extras="" site=""
if [ "$os" != Darwin ]; then
    if has "$PY" "$GI_CHECK"; then
        # The system's PyGObject: the venv sees it (nothing to compile).
        site="--system-site-packages"
        say "tray menu: the system's PyGObject ($("$PY" -E -c 'import gi; print(gi.__version__)'))"
    elif command -v pkg-config >/dev/null 2>&1 && pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null \
            && [ -f "$("$PY" -E -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
        extras="linux"
        say "tray menu: building PyGObject (no system PyGObject for $PY, but its build headers are there)"
    else
        say "NOTE: no PyGObject for $PY: vidtray runs its services but shows no tray icon (it says so when it starts)."
        say "  For the icon install it and run this again:"
        say "    Debian/Ubuntu: sudo apt install python3-gi gir1.2-gtk-3.0"
        say "    Fedora:        sudo dnf install python3-gobject gtk3"
        say "    Arch:          sudo pacman -S python-gobject gtk3"
    fi
fi
if ! has "$PY" 'import tkinter'; then
    say "NOTE: $PY has no Tk: the prompt popup will not open. Install it and run this again:"
    if [ "$os" = Darwin ]; then
        say "    Homebrew: brew install python-tk@$("$PY" -E -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    else
        say "    Debian/Ubuntu: sudo apt install python3-tk   Fedora: sudo dnf install python3-tkinter"
    fi
fi

# -- torch: which build ---------------------------------------------------------------------------------
torch_index="" torch_kind=""
case $TORCH in
    none) torch_kind=none ;;
    auto)
        if [ "$os" = Darwin ]; then
            torch_kind=pypi
        elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            torch_kind=cuda
        else
            torch_kind=cpu
        fi ;;
    cuda) if [ "$os" = Darwin ]; then die "there is no CUDA on macOS: use --torch auto (Apple GPU through MPS)"; fi
          torch_kind=cuda ;;
    cpu) if [ "$os" = Darwin ]; then torch_kind=pypi; else torch_kind=cpu; fi ;;
    *) torch_kind=index torch_index=$TORCH ;;
esac
case $torch_kind in
    none) say "torch: none (--torch none): vidtray can watch, list and clean, but not generate" ;;
    cpu) torch_index=$CPU_INDEX
         if [ "$TORCH" = auto ]; then why="no NVIDIA GPU found"; else why="--torch cpu"; fi
         say "torch: the CPU build ($why): about 320 MB to download, a 1.4 GB venv; generating on a CPU is slow"
         if [ "$TORCH" = auto ]; then
             say "       (an NVIDIA GPU whose driver nvidia-smi does not see? run this again with --torch cuda)"
         fi ;;
    cuda) if [ "$TORCH" = auto ]; then why="nvidia-smi found an NVIDIA GPU"; else why="--torch cuda"; fi
          say "torch: the CUDA build from PyPI ($why): about 3 GB to download, a venv of about 6 GB" ;;
    pypi) say "torch: PyPI's macOS build (Apple GPU through MPS)" ;;
    index) say "torch: from $torch_index" ;;
esac
[ "$torch_kind" = none ] || extras="${extras:+$extras,}gen"

# -- the venv --------------------------------------------------------------------------------------------
venv="$VIDTRAY_HOME/venv"
vpy="$venv/bin/python"
mkdir -p "$VIDTRAY_HOME" "$VIDTRAY_BIN"
clear=""
if [ -x "$vpy" ]; then
    # Reuse it (an update keeps the big downloads) unless it was made from another Python or the other way.
    old_real=$("$vpy" -E -c "$REAL_PY" 2>/dev/null || true)
    old_site=$(sed -n 's/^include-system-site-packages *= *//p' "$venv/pyvenv.cfg" 2>/dev/null)
    if [ -n "$site" ]; then want_site=true; else want_site=false; fi
    if [ "$old_real" != "$("$PY" -E -c "$REAL_PY")" ] || [ "$old_site" != "$want_site" ]; then
        clear="--clear"
        say "making $venv again (it was made from ${old_real:-another Python}, or without the system PyGObject)"
    fi
fi
say "installing into $venv"
# shellcheck disable=SC2086
"$PY" -m venv $clear $site "$venv" || die "could not make the venv $venv (Debian/Ubuntu: sudo apt install python3-venv)"
"$vpy" -m pip install --quiet --upgrade pip || say "could not upgrade pip; going on with $("$vpy" -m pip --version)"

case $torch_kind in
    cpu|cuda|index)
        # A torch of another build (an earlier --torch cpu, now cuda, say) goes first: pip would keep it.
        # The build is the version's local label: 2.5.1+cpu from .../whl/cpu, 2.5.1+cu124 from .../whl/cu124,
        # none from PyPI.
        have=$("$vpy" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
        want=""
        if [ -n "$torch_index" ]; then want=$(basename "${torch_index%/}"); fi
        case $have in *+*) have_label=${have#*+} ;; *) have_label="" ;; esac
        if [ -n "$have" ] && [ "$have_label" != "$want" ]; then
            say "replacing torch $have (another build)"
            "$vpy" -m pip uninstall --quiet -y torch
        fi
        if [ -n "$torch_index" ]; then
            "$vpy" -m pip install --quiet --index-url "$torch_index" torch \
                || die "could not install torch from $torch_index"
        fi ;;
esac

spec=$SOURCE
if [ -n "$extras" ]; then spec="${SOURCE}[${extras}]"; fi
say "installing $spec"
"$vpy" -m pip install --quiet "$spec" || die "pip could not install $spec"
for tool in vidtray vidtray-tray; do
    ln -sf "$venv/bin/$tool" "$VIDTRAY_BIN/$tool"
done
VIDTRAY="$venv/bin/vidtray"
[ -x "$VIDTRAY" ] || die "installed, but $VIDTRAY is missing"
say "installed: $("$VIDTRAY" --version) ($(du -sh "$venv" 2>/dev/null | cut -f1) in $venv)"
case ":$PATH:" in
    *":$VIDTRAY_BIN:"*) ;;
    *) say "add $VIDTRAY_BIN to PATH to type 'vidtray' (for example in ~/.profile)" ;;
esac

# -- desktop integration ---------------------------------------------------------------------------------
if [ "$os" != Darwin ]; then
    "$VIDTRAY" desktop-entry install
fi

if [ "$AUTOSTART" = yes ]; then
    "$VIDTRAY" autostart enable
elif "$VIDTRAY" autostart status | grep -q '^start on login: on'; then
    "$VIDTRAY" autostart disable
else
    say "start on login left off (turn on later: vidtray autostart enable)"
fi

if [ "$START" = auto ]; then
    START=no
    if [ "$os" = Darwin ] || [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then START=yes; fi
fi
if [ "$START" = yes ]; then
    # Detached, from the home folder (not this checkout: `python -m` children would import it), output
    # in vidtray's log file (vidtray doctor shows where).
    cd "$HOME"
    # An update: the tray that runs now has the old code; it quits (and waits until it has) first.
    "$VIDTRAY" tray --quit >/dev/null 2>&1 || true
    nohup "$venv/bin/vidtray-tray" >/dev/null 2>&1 </dev/null &
    pid=$!
    sleep 2
    if kill -0 "$pid" 2>/dev/null; then
        say "tray started (pid $pid): left click opens the prompt popup, right click the menu"
    else
        say "the tray did not stay up; see: $VIDTRAY doctor (and the log file it names)"
    fi
else
    say "start the tray with: $VIDTRAY_BIN/vidtray-tray (or from the application menu)"
fi
say "done. Check the setup with: $VIDTRAY doctor"
