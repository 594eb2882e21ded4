#!/bin/sh
# Install the liverview application for the current user (no root needed), or remove it again.
#
#   ./install.sh [--prefix DIR] [APP_DIR]      copy APP_DIR to DIR/opt/liverview, add the menu entry
#   ./install.sh --uninstall [--prefix DIR]    remove what the install put there
#
# DIR defaults to ~/.local. APP_DIR is the built application folder (the one holding the `liverview`
# executable): by default the folder this script lies in when it was shipped inside the
# application, else dist/liverview of the source tree. Menu entry and icons go to
# $XDG_DATA_HOME (default DIR/share): applications/liverview.desktop and
# icons/hicolor/<size>x<size>/apps/liverview.png; a `liverview` command goes to DIR/bin.
set -eu

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }

prefix="$HOME/.local" uninstall=0 app_dir=""
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage 2; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; usage 2 ;;
        *) app_dir=$1; shift ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
data_home=${XDG_DATA_HOME:-$prefix/share}
target="$prefix/opt/liverview"
desktop_file="$data_home/applications/liverview.desktop"
sizes="16 32 48 64 128 256 512"

refresh_caches() {
    # Menus and icon themes pick the change up on their own eventually; these make it immediate.
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$data_home/applications" 2>/dev/null || true
    fi
    if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$data_home/icons/hicolor/index.theme" ]; then
        gtk-update-icon-cache -q -t "$data_home/icons/hicolor" 2>/dev/null || true
    fi
}

if [ "$uninstall" = 1 ]; then
    rm -rf "$target"
    rm -f "$desktop_file"
    for size in $sizes; do rm -f "$data_home/icons/hicolor/${size}x${size}/apps/liverview.png"; done
    if [ -L "$prefix/bin/liverview" ]; then rm -f "$prefix/bin/liverview"; fi
    refresh_caches
    echo "liverview removed from $prefix (your annotations and settings are kept)"
    exit 0
fi

if [ -z "$app_dir" ]; then
    if [ -x "$here/liverview" ]; then app_dir=$here; else app_dir="$here/../../dist/liverview"; fi
fi
if [ ! -x "$app_dir/liverview" ]; then
    echo "install.sh: no liverview executable in $app_dir; build it first (make package) or name the folder" >&2
    exit 1
fi
app_dir=$(cd "$app_dir" && pwd)
icons="$app_dir/_internal/resources/icons"
template="$here/liverview.desktop"
[ -f "$template" ] || template="$app_dir/liverview.desktop"
[ -f "$template" ] || { echo "install.sh: liverview.desktop not found beside the script" >&2; exit 1; }

# Copy beside the old install, then swap, so an interrupted copy never leaves a half application.
mkdir -p "$prefix/opt"
staging="$target.new.$$"
rm -rf "$staging"
cp -R "$app_dir" "$staging"
rm -rf "$target"
mv "$staging" "$target"

mkdir -p "$prefix/bin"
ln -sfn "$target/liverview" "$prefix/bin/liverview"
for size in $sizes; do
    if [ -f "$icons/liverview-$size.png" ]; then
        mkdir -p "$data_home/icons/hicolor/${size}x${size}/apps"
        cp "$icons/liverview-$size.png" "$data_home/icons/hicolor/${size}x${size}/apps/liverview.png"
    fi
done
mkdir -p "$data_home/applications"
# Exec needs the absolute path: ~/.local/bin is not on every desktop session's PATH.
sed "s|^Exec=liverview |Exec=\"$target/liverview\" |" "$template" > "$desktop_file"
refresh_caches
echo "liverview installed in $target; it is in your applications menu (and the command $prefix/bin/liverview)"
