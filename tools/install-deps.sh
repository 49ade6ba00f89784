#!/bin/sh
# Installs the Debian packages the build and tests need, if any is missing (needs root for apt-get).
set -e
PKGS="cmake ninja-build g++ clang make pkg-config nlohmann-json3-dev libpcre2-dev libutf8proc-dev libgtest-dev libgmock-dev libbenchmark-dev libpng-dev zlib1g-dev libsimde-dev libdnnl-dev libjpeg-dev libwebp-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev python3 python3-venv"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
