#!/bin/sh
# Install the Debian 12 packages xpimportd needs to build and test.
#   deps.sh          install what is missing (as root), else print the command
#   deps.sh --auto   the same, silent when nothing is missing (used by make)
#   deps.sh --list   print the package list
set -u
PKGS="build-essential autoconf pkg-config libuv1-dev libssh2-1-dev libcurl4-openssl-dev
libjansson-dev libyaml-dev libsystemd-dev libcsv-dev libssl-dev zlib1g-dev libcmocka-dev
python3 python3-pytest python3-pytest-timeout python3-yaml openssh-server openssh-client openssl
mandoc strace clang valgrind systemd"
mode=${1:-}
if [ "$mode" = "--list" ]; then echo $PKGS; exit 0; fi
missing=""
for p in $PKGS; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
  case "$st" in *" installed") ;; *) missing="$missing $p" ;; esac
done
if [ -z "$missing" ]; then
  [ "$mode" = "--auto" ] || echo "deps: all packages installed"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
    echo "deps: apt-get failed for:$missing" >&2; exit 1; }
else
  echo "deps: missing packages:$missing" >&2
  echo "deps: run as root: apt-get install$missing" >&2
  [ "$mode" = "--auto" ] && exit 0
  exit 1
fi
