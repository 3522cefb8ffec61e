#!/bin/sh
# /etc/kernel/postrm.d/rkdump: a removed kernel's capture image goes with it.
# Debian's kernel packages run this with the kernel's release as $1.
set -e
release=$1
[ -n "$release" ] || exit 0
rm -f "/var/lib/rkdump/initrd-$release.img" "/var/lib/rkdump/initrd-$release.img.json"
exit 0
