#!/usr/bin/env bash
# Build a release tarball: dist/shale-<version>-<target>.tar.gz (and its .sha256), and print its path.
#
#   scripts/release.sh
#
# The tarball holds one directory, shale-<version>-<target>/, with:
#   bin/shale                     the release binary (debug info stripped when `strip` is installed)
#   README.md, LICENSE
#   scripts/archive.sh, scripts/restore.sh
#   packaging/shale.service       the systemd unit
# The version comes from Cargo.toml, the target triple from `rustc -vV`. Entries are sorted, owned by root
# and dated from the last commit (or SOURCE_DATE_EPOCH), and gzip stores no name or time: the tarball
# depends only on the files it holds.
#
# Environment: DIST_DIR (default <repo>/dist), CARGO_TARGET_DIR (default <repo>/target).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

version=$(awk -F'"' '/^\[/ { in_pkg = ($0 == "[package]") } in_pkg && /^version *=/ { print $2; exit }' Cargo.toml)
[[ -n "$version" ]] || { echo "release: no version in Cargo.toml" >&2; exit 1; }
target=$(rustc -vV | sed -n 's/^host: //p')
[[ -n "$target" ]] || { echo "release: no host triple in rustc -vV" >&2; exit 1; }
target_dir=${CARGO_TARGET_DIR:-$root/target}
dist=${DIST_DIR:-$root/dist}
name="shale-$version-$target"

echo "release: building $name" >&2
cargo build --release --locked --bin shale >&2
bin="$target_dir/release/shale"
[[ -x "$bin" ]] || { echo "release: $bin was not built" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/shale-release.XXXXXX")
trap 'rm -rf "$stage"' EXIT
top="$stage/$name"
mkdir -p "$top/bin" "$top/scripts" "$top/packaging"
install -m 0755 "$bin" "$top/bin/shale"
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$top/bin/shale"
fi
install -m 0644 README.md LICENSE "$top/"
install -m 0755 scripts/archive.sh scripts/restore.sh "$top/scripts/"
install -m 0644 packaging/shale.service "$top/packaging/"

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
mkdir -p "$dist"
out="$dist/$name.tar.gz"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - "$name" |
    gzip -n -9 >"$out.partial"
mv "$out.partial" "$out"
(cd "$dist" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "release: wrote $out" >&2
echo "$out"
