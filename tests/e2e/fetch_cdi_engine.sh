#!/usr/bin/env bash
# A Docker engine that resolves CDI devices, for the driver path's e2e (tests/e2e/cdi_engine.py):
# Debian 13's `dockerd` (docker.io) and `docker` (docker-cli), 26.x, unpacked into a directory of
# their own, never installed: the host's docker.io (Debian 12's is 20.10, without CDI) is left as
# it is.  They need GLIBC_2.34 and run on Debian 12; Debian 13's runc needs GLIBC_2.38 and does
# not, so it is not taken: the host's containerd and runc serve the engine.
#
# Fetched once with apt from the Debian mirror the host's own apt sources name (signatures
# checked against debian-archive-keyring), kept in $GPUMEM_CDI_ENGINE_DIR (default
# /var/cache/gpumem-e2e/docker-cdi): bin/dockerd and bin/docker.  Needs root; prints the
# directory.  Exit 0 when they are there and run, 1 (with the reason) otherwise.
set -euo pipefail
exec </dev/null

dir="${GPUMEM_CDI_ENGINE_DIR:-/var/cache/gpumem-e2e/docker-cdi}"
suite=trixie
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fail() { printf 'fetch_cdi_engine.sh: %s\n' "$*" >&2; exit 1; }

if [ -x "$dir/bin/dockerd" ] && [ -x "$dir/bin/docker" ]; then
    echo "$dir"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "needs root (apt-get download into $dir)"
command -v apt-get >/dev/null 2>&1 || fail "no apt-get: not a Debian host"
[ -r "$keyring" ] || fail "no $keyring (apt-get install debian-archive-keyring)"
# the host's own Debian mirror: the URI its sources give for its own release
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
mirror="$(apt-get indextargets --format '$(REPO_URI)' "Release: $codename" "Target-Of: deb" 2>/dev/null |
    grep -v -- '-security' | head -n 1 || true)"
[ -n "$mirror" ] || fail "no Debian mirror in the host's apt sources for $codename"

work="$(mktemp -d "${TMPDIR:-/tmp}/gpumem-cdi-engine.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root" "$work/bin"
echo "deb [signed-by=$keyring] $mirror $suite main" >"$work/sources.list"
: >"$work/status"
apt=(
    -o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Dir::State::status=$work/status"
    -o APT::Sandbox::User=root -o Debug::NoLocking=1 -q
)
apt-get "${apt[@]}" update >"$work/apt.log" 2>&1 || fail "apt-get update ($suite) failed: $(tail -n 1 "$work/apt.log")"
(cd "$work/debs" && apt-get "${apt[@]}" download docker.io docker-cli >>"$work/apt.log" 2>&1) ||
    fail "apt-get download docker.io docker-cli ($suite) failed: $(tail -n 1 "$work/apt.log")"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
cp "$work/root/usr/sbin/dockerd" "$work/root/usr/bin/docker" "$work/bin/"
"$work/bin/dockerd" --version >/dev/null 2>"$work/run.log" || fail "$suite's dockerd does not run here: $(tail -n 1 "$work/run.log")"
"$work/bin/docker" --version >/dev/null 2>"$work/run.log" || fail "$suite's docker does not run here: $(tail -n 1 "$work/run.log")"
# in place at once: a directory with bin/ is always complete (two fetches at once: the last wins)
mkdir -p "$(dirname "$dir")"
new="$(mktemp -d "$dir.new.XXXXXX")"
mv "$work/bin" "$new/bin"
"$new/bin/dockerd" --version >"$new/VERSION"
chmod 755 "$new"
rm -rf "$dir"
mv -T "$new" "$dir" 2>/dev/null || rm -rf "$new"
echo "$dir"
