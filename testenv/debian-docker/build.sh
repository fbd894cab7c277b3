#!/bin/sh
# Builds the split LXD image "berth/debian-docker" into OUTDIR:
#   OUTDIR/metadata.tar.gz and OUTDIR/rootfs.tar.gz
# Debian 12 (debootstrap, minbase) with Debian's docker.io and busybox (its
# udhcpc and wget), this folder's init as /sbin/init and udhcpc.script as
# udhcpc's script. Needs root, debootstrap and Debian's package
# mirror (the one apt is configured with: no other network is used).
set -eu
outdir=${1:?usage: build.sh OUTDIR [KEY]}
key=${2:-none}
here=$(cd "$(dirname "$0")" && pwd)

# Use the mirror apt already uses, so the build needs no address of its own.
mirror=$(
	{ grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }'
	  grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{ print $2 }'; } |
	grep -v -- '-security' | head -n1
)
[ -n "$mirror" ] || { echo "build.sh: no Debian mirror found in apt sources" >&2; exit 1; }

work=$(mktemp -d /var/tmp/berth-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

echo "build.sh: debootstrap bookworm from $mirror (this takes a few minutes once)" >&2
debootstrap --variant=minbase \
	--include=docker.io,iproute2,procps,ca-certificates,busybox \
	bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	exit 1
}

install -m 0755 "$here/init" "$root/sbin/init"
install -D -m 0755 "$here/udhcpc.script" "$root/etc/udhcpc/default.script"
# debootstrap copied the build host's resolver; udhcpc writes the real one
# from the lease (the bridge's dnsmasq).
echo "# written by udhcpc from the lease on eth0" >"$root/etc/resolv.conf"
mkdir -p "$root/etc/docker"
# Host networking only (DESIGN.md): no docker0 bridge, no NAT rules, nothing
# for iptables to do inside the instance.
cat >"$root/etc/docker/daemon.json" <<'JSON'
{
  "bridge": "none",
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
JSON
echo berth >"$root/etc/hostname"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

cat >"$work/metadata.yaml" <<META
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: debian
  release: bookworm
  description: berth test image (Debian 12 + docker.io)
  berth.key: "$key"
META

mkdir -p "$outdir"
tar -C "$work" -czf "$outdir/metadata.tar.gz.tmp" metadata.yaml
tar -C "$root" --numeric-owner -czf "$outdir/rootfs.tar.gz.tmp" .
mv "$outdir/metadata.tar.gz.tmp" "$outdir/metadata.tar.gz"
mv "$outdir/rootfs.tar.gz.tmp" "$outdir/rootfs.tar.gz"
echo "build.sh: image written to $outdir" >&2
