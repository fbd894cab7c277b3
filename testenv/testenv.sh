#!/bin/sh
# berth's test environment: real LXD, real nested Docker, a local registry.
#
#   testenv.sh up      install what is missing, start what is not running,
#                      build/import what is not there (idempotent; the default)
#   testenv.sh status  say what is there
#   testenv.sh down    stop the daemons this script started (lxd, registry);
#                      the network is LXD's: it comes back with LXD
#   testenv.sh purge   down, and delete test instances, the test images, the
#                      berth-test profile, the berthbr0 network and the caches
#   testenv.sh lxd kill|start        faults: kill -9 the LXD daemon this
#   testenv.sh registry stop|start   script started (its instances keep
#                                    running), or stop the registry; start
#                                    brings either back (fault tests)
#   testenv.sh image refresh [busybox|debian-docker]
#                      a changed build of the image under the same alias
#                      (a base-image update); prints "alias old -> new"
#   testenv.sh cluster up|down|purge|status|env|kill M|start M|freeze M|thaw M
#                      a 3-member LXD cluster on this machine, beside the
#                      single-host LXD: see cluster.sh
#   testenv.sh sops-path
#                      print the path of the sops CLI that up builds (the
#                      secrets tests encrypt with it); exit 1 when absent
#
# Contract used by the tests (see README "Test environment"):
#   LXD image alias  berth/debian-docker   Debian 12 + docker.io, own /sbin/init
#   LXD image alias  berth/busybox         tiny, for LXD client tests
#   LXD profile      berth-test            nesting + syscall intercepts + a
#                                          proxy to the registry at
#                                          127.0.0.1:5000 inside instances +
#                                          eth0 on berthbr0
#   LXD network      berthbr0              bridge 10.213.87.1/24, DHCP, no
#                                          NAT, no uplink, no <name>.lxd
#                                          DNS names; its dnsmasq
#                                          forwards berth.internal to
#                                          10.213.87.1:8053 (berth run
#                                          --dns-listen 10.213.87.1:8053)
#   registry         127.0.0.1:5000        berth/hello:1, berth/hello:2,
#                                          berth/broken:1, berth/kv:1 (a
#                                          key-value store on /data)
#   sops CLI         $cache/sops-v3.13.3/sops   built from the Go module berth's
#                                          secrets package is tested against
# Needs root on Debian 12. Uses no network but Debian's package mirror and
# the Go module proxy (for the sops CLI); the
# bridge has no uplink: instance traffic never leaves the machine.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
state=${BERTH_TESTENV_STATE:-/var/lib/berth-testenv}
cache=${BERTH_TESTENV_CACHE:-/var/cache/berth-testenv}
registry_addr=127.0.0.1:5000
# The instances' network: a managed LXD bridge with a fixed subnet, and the
# zone its dnsmasq forwards to berth's DNS (berth run --dns-listen).
bridge=berthbr0
bridge_addr=10.213.87.1
bridge_cidr=$bridge_addr/24
dns_zone=berth.internal
dns_port=8053
berth=$repo/bin/berth
# The sops release whose files berth's secrets package reads and writes:
# its tests encrypt with this CLI and decrypt berth's output with it.
sops_version=v3.13.3
sops_bin=$cache/sops-$sops_version/sops
# gcc and libc6-dev: go test -race needs cgo. dnsmasq-base and iptables:
# LXD 5.0 needs both to create a bridge (it checks ip6tables even with
# firewalling off); dnsmasq-base also serves the cluster's bridge. openssl:
# the cluster's client certificate. chromium: the status page's browser tests.
packages="lxd btrfs-progs debootstrap busybox-static docker-registry jq curl git gcc libc6-dev dnsmasq-base iptables openssl chromium"
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "testenv: $*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
	[ "$(uname -s)" = Linux ] || die "needs Linux"
	[ "$(id -u)" = 0 ] || die "needs root (LXD, debootstrap)"
}

install_packages() {
	missing=
	for p in $packages; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	log "installing:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

lxd_answers() { lxc query /1.0 >/dev/null 2>&1; }

start_lxd() {
	if lxd_answers; then return 0; fi
	log "starting lxd"
	mkdir -p "$state"
	# No systemd here: run the daemon detached from our session so it
	# survives the make/test process that started it.
	setsid lxd --group lxd --logfile "$state/lxd.log" >/dev/null 2>&1 </dev/null &
	echo $! >"$state/lxd.pid"
	lxd waitready --timeout=120 || die "lxd did not become ready; see $state/lxd.log"
}

init_lxd() {
	if [ -z "$(lxc storage list --format csv)" ]; then
		log "initialising lxd: btrfs loop pool 'default'"
		lxd init --preseed <<'YAML'
storage_pools:
- name: default
  driver: btrfs
  config:
    size: 30GiB
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
YAML
	fi
	if ! lxc profile device get default root type >/dev/null 2>&1; then
		pool=$(lxc storage list --format csv | head -n1 | cut -d, -f1)
		lxc profile device add default root disk path=/ pool="$pool" >/dev/null
	fi
}

# image_key ALIAS: the berth.key property of the image an alias points to.
image_key() {
	fp=$(lxc query "/1.0/images/aliases/$(echo "$1" | sed 's,/,%2F,g')" 2>/dev/null | jq -r .target) || return 0
	lxc query "/1.0/images/$fp" 2>/dev/null | jq -r '.properties["berth.key"] // empty'
}

# import_image ALIAS DIR KEY: point ALIAS at the split image in DIR, with
# berth's own LXD client (berth image import), dropping the image it
# pointed to before.
import_image() {
	alias=$1 dir=$2 key=$3
	"$berth" image import --alias "$alias" --prune-old "$dir/metadata.tar.gz" "$dir/rootfs.tar.gz" >/dev/null
	log "image $alias ready (key $key)"
}

# prune_cache NAME DIR: drop the cached builds of image NAME but DIR, the
# one just imported.
prune_cache() {
	for d in "$cache/$1"-*; do
		[ "$d" = "$2" ] || [ ! -d "$d" ] || rm -rf "$d"
	done
}

# ensure_sops builds the sops CLI into the cache once (go install from the
# module proxy; a few minutes the first time, nothing after).
ensure_sops() {
	[ -x "$sops_bin" ] && return 0
	log "building sops $sops_version (go install; a few minutes the first time, cached in ${sops_bin%/*})"
	mkdir -p "${sops_bin%/*}"
	GOBIN="${sops_bin%/*}.tmp" GOFLAGS=-buildvcs=false go install "github.com/getsops/sops/v3/cmd/sops@$sops_version"
	mv "${sops_bin%/*}.tmp/sops" "$sops_bin"
	rmdir "${sops_bin%/*}.tmp"
}

# build_berth: the importer above is berth itself.
build_berth() {
	(cd "$repo" && go build -buildvcs=false -o bin/berth ./cmd/berth)
}

dir_key() { (cd "$1" && cat $(ls | sort)) | sha256sum | cut -c1-16; }

ensure_debian_docker() {
	dir=$(image_dir debian-docker)
	key=${dir##*-}
	[ "$(image_key berth/debian-docker)" = "$key" ] && return 0
	import_image berth/debian-docker "$dir" "$key"
	prune_cache debian-docker "$dir"
	# The first instance of an image unpacks it into the pool (tens of
	# seconds on a fresh btrfs pool): pay that here, not in a test's timeout.
	lxc init berth/debian-docker berth-it-warmup -p default >/dev/null 2>&1
	lxc delete berth-it-warmup
}

# image_dir NAME prints the cache directory of the current build of test
# image NAME (busybox or debian-docker), building it first when the cache
# does not have it. Both environments, single-host and cluster, import
# from there.
image_dir() {
	case $1 in
	busybox)
		key=$(cat "$0" /bin/busybox "$here/debian-docker/udhcpc.script" | sha256sum | cut -c1-16)
		dir=$cache/busybox-$key
		[ -f "$dir/rootfs.tar.gz" ] || build_busybox "$dir" "$key"
		;;
	debian-docker)
		key=$(dir_key "$here/debian-docker")
		dir=$cache/debian-docker-$key
		if [ ! -f "$dir/rootfs.tar.gz" ]; then
			log "building berth/debian-docker (debootstrap; a few minutes, cached in $dir)"
			"$here/debian-docker/build.sh" "$dir" "$key" >&2
		fi
		;;
	*) die "unknown test image '$1' (want busybox or debian-docker)" ;;
	esac
	echo "$dir"
}

# ensure_busybox: berth/busybox, Debian's static busybox with every applet
# linked and an init that takes an address on eth0 by DHCP (when there is
# an eth0) with the same udhcpc script as berth/debian-docker, then sleeps.
ensure_busybox() {
	dir=$(image_dir busybox)
	key=${dir##*-}
	[ "$(image_key berth/busybox)" = "$key" ] && return 0
	import_image berth/busybox "$dir" "$key"
	prune_cache busybox "$dir"
}

# build_busybox DIR KEY writes the split image of berth/busybox to DIR.
build_busybox() {
	dir=$1 key=$2
	tmp=$(mktemp -d)
	mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/sbin" "$tmp/rootfs/etc/udhcpc"
	for d in proc sys dev tmp root run var/log; do mkdir -p "$tmp/rootfs/$d"; done
	cp /bin/busybox "$tmp/rootfs/bin/busybox"
	for a in $(/bin/busybox --list); do
		case $a in busybox | init | linuxrc) ;; *) ln -s busybox "$tmp/rootfs/bin/$a" ;; esac
	done
	install -m 0755 "$here/debian-docker/udhcpc.script" "$tmp/rootfs/etc/udhcpc/default.script"
	echo "# written by udhcpc from the lease on eth0" >"$tmp/rootfs/etc/resolv.conf"
	cat >"$tmp/rootfs/sbin/init" <<'INIT'
#!/bin/sh
# /sbin/init of berth's test image berth/busybox: lo up and, when the
# instance has an eth0 (the berth-test profile), an address by DHCP: udhcpc
# in the background (boot never waits for it) keeps the lease renewed.
# It stays PID 1 to answer LXD's clean stop (SIGPWR; SIGTERM and SIGINT
# too): a PID 1 without a handler ignores it, and every stop would wait
# for its timeout before being forced.
export PATH=/bin
trap 'kill -TERM -1 2>/dev/null; exit 0' PWR TERM INT
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
	udhcpc -f -i eth0 -s /etc/udhcpc/default.script -t 3 -T 2 -A 5 >>/var/log/udhcpc.log 2>&1 </dev/null &
fi
while :; do
	sleep 3600 &
	wait $!
done
INIT
	chmod 755 "$tmp/rootfs/sbin/init"
	printf 'architecture: %s\ncreation_date: %s\nproperties:\n  os: busybox\n  description: berth test busybox\n  berth.key: "%s"\n' \
		"$(uname -m)" "$(date +%s)" "$key" >"$tmp/metadata.yaml"
	mkdir -p "$dir"
	# Written aside and renamed: a run killed here leaves no truncated
	# tarball for the next run to trust.
	tar -C "$tmp" -czf "$dir/metadata.tar.gz.tmp" metadata.yaml
	tar -C "$tmp/rootfs" --numeric-owner -czf "$dir/rootfs.tar.gz.tmp" .
	mv "$dir/metadata.tar.gz.tmp" "$dir/metadata.tar.gz"
	mv "$dir/rootfs.tar.gz.tmp" "$dir/rootfs.tar.gz"
	rm -rf "$tmp"
}

ensure_profile() {
	lxc profile show berth-test >/dev/null 2>&1 || lxc profile create berth-test >/dev/null
	lxc profile set berth-test security.nesting=true
	lxc profile set berth-test security.syscalls.intercept.mknod=true
	lxc profile set berth-test security.syscalls.intercept.setxattr=true
	if ! lxc profile device get berth-test registry type >/dev/null 2>&1; then
		lxc profile device add berth-test registry proxy \
			listen=tcp:$registry_addr connect=tcp:$registry_addr bind=instance >/dev/null
	fi
	if ! lxc profile device get berth-test eth0 type >/dev/null 2>&1; then
		lxc profile device add berth-test eth0 nic network=$bridge name=eth0 >/dev/null
	elif [ "$(lxc profile device get berth-test eth0 network)" != "$bridge" ]; then
		lxc profile device set berth-test eth0 network=$bridge name=eth0
	fi
}

# net_want KEY VALUE: set a config key of the bridge unless it has that
# value already (a change of raw.dnsmasq restarts the network's dnsmasq).
net_want() {
	[ "$(lxc network get "$bridge" "$1")" = "$2" ] || lxc network set "$bridge" "$1" "$2"
}

# ensure_network: the managed bridge the instances' eth0 is on. LXD runs
# dnsmasq on it for DHCP and DNS; raw.dnsmasq forwards the zone berth
# serves. No NAT and no uplink: nothing leaves the machine. dns.mode=none:
# LXD registers no <instance>.lxd names, because it refuses to start an
# instance whose name another instance on the bridge has in any project
# ("Instance DNS name ... already used on network"), and every test
# project has its web-0 (and the demo too).
ensure_network() {
	if ! lxc network show "$bridge" >/dev/null 2>&1; then
		if ip -4 -o addr show | grep -q " inet ${bridge_addr%.*}\."; then
			die "$bridge_cidr clashes with an address of this host (ip -4 addr): change bridge_addr in $0"
		fi
		log "creating network $bridge ($bridge_cidr, DHCP, no NAT, no uplink)"
		lxc network create "$bridge" ipv4.address="$bridge_cidr" ipv4.nat=false ipv4.dhcp=true \
			ipv4.firewall=false ipv6.address=none dns.mode=none >/dev/null
	fi
	net_want ipv4.address "$bridge_cidr"
	net_want ipv4.nat false
	net_want ipv4.dhcp true
	net_want ipv4.firewall false
	net_want ipv6.address none
	net_want dns.mode none
	net_want raw.dnsmasq "server=/$dns_zone/$bridge_addr#$dns_port"
}

registry_answers() { curl -fs -o /dev/null --max-time 2 "http://$registry_addr/v2/"; }

start_registry() {
	if ! registry_answers; then
		log "starting registry on $registry_addr"
		mkdir -p "$state/registry"
		cat >"$state/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: $registry_addr
YAML
		setsid docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 </dev/null &
		echo $! >"$state/registry.pid"
		i=0
		until registry_answers; do
			i=$((i + 1))
			[ $i -lt 100 ] || die "registry did not answer; see $state/registry.log"
			sleep 0.1
		done
	fi
	(cd "$repo" && go run -buildvcs=false ./testenv/appimages -registry "$registry_addr") >"$state/images.txt.tmp"
	mv "$state/images.txt.tmp" "$state/images.txt"
	log "registry images: $(cut -d' ' -f1 "$state/images.txt" | tr '\n' ' ')"
}

stop_pidfile() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	if kill "$pid" 2>/dev/null; then
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	fi
	rm -f "$1"
}

# sweep_leftovers deletes what a killed test run may have left: test
# instances, test projects, and expired berth leases in the server config.
sweep_leftovers() {
	for i in $(lxc list --format csv -c n | grep -E '^berth-it-' || true); do
		log "deleting leftover instance $i"
		lxc delete -f "$i" || true
	done
	for p in $(lxc project list --format csv | cut -d, -f1 | sed 's/ (current)$//' | grep -E '^berth-(e2e|bench)-' || true); do
		log "deleting leftover project $p"
		for i in $(lxc list --project "$p" --format csv -c n); do lxc delete -f --project "$p" "$i" || true; done
		lxc project delete "$p" >/dev/null || true
	done
	now=$(date +%s)
	lxc query /1.0 | jq -r '.config // {} | to_entries[] | select(.key | startswith("user.berth.lease.")) | "\(.key) \(.value)"' |
		while read -r key holder expiry; do
			if [ "${expiry:-0}" -lt "$now" ] 2>/dev/null; then lxc config unset "$key"; fi
		done
}

cmd_up() {
	require_root
	start=$(date +%s)
	install_packages
	start_lxd
	init_lxd
	sweep_leftovers
	ensure_network
	ensure_profile
	build_berth
	ensure_sops
	ensure_busybox
	ensure_debian_docker
	start_registry
	log "ready in $(($(date +%s) - start))s"
}

cmd_status() {
	lxd_answers && echo "lxd: up ($(lxc query /1.0 | jq -r .environment.server_version))" || echo "lxd: down"
	for a in berth/debian-docker berth/busybox; do echo "image $a: key $(image_key $a)"; done
	lxc profile show berth-test >/dev/null 2>&1 && echo "profile berth-test: present, eth0 on $(lxc profile device get berth-test eth0 network 2>/dev/null || echo nothing)" || echo "profile berth-test: missing"
	if lxc network show "$bridge" >/dev/null 2>&1; then
		echo "network $bridge: $(lxc network get "$bridge" ipv4.address), nat $(lxc network get "$bridge" ipv4.nat), $(lxc network list-leases "$bridge" --format csv | grep -ci ',dynamic' || true) dynamic leases; dnsmasq $(lxc network get "$bridge" raw.dnsmasq)"
	else
		echo "network $bridge: missing"
	fi
	registry_answers && echo "registry $registry_addr: up" || echo "registry $registry_addr: down"
	[ -x "$sops_bin" ] && echo "sops: $sops_bin" || echo "sops: missing"
}

cmd_down() {
	stop_pidfile "$state/registry.pid"
	if [ -f "$state/lxd.pid" ]; then
		lxd shutdown --timeout=60 2>/dev/null || true
		stop_pidfile "$state/lxd.pid"
	fi
	log "down"
}

cmd_purge() {
	require_root
	if lxd_answers; then
		sweep_leftovers
		for a in berth/debian-docker berth/busybox; do
			fp=$(lxc query "/1.0/images/aliases/$(echo "$a" | sed 's,/,%2F,g')" 2>/dev/null | jq -r .target) || continue
			lxc image delete "$fp" || true
		done
		lxc profile delete berth-test 2>/dev/null || log "profile berth-test still in use; kept"
		# After the instances and the profile that use it.
		if lxc network show "$bridge" >/dev/null 2>&1; then
			lxc network delete "$bridge" >/dev/null 2>&1 || log "network $bridge still in use; kept"
		fi
	fi
	cmd_down
	rm -rf "$cache" "$state"
}

# fault_lxd kill|start: the fault tests' "LXD daemon dies" and its cure.
fault_lxd() {
	case ${1:-} in
	kill)
		[ -f "$state/lxd.pid" ] || die "lxd was not started by this script (no $state/lxd.pid)"
		pid=$(cat "$state/lxd.pid")
		kill -9 "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		log "lxd killed (pid $pid)"
		;;
	start) start_lxd ;;
	*) die "usage: testenv.sh lxd kill|start" ;;
	esac
}

fault_registry() {
	case ${1:-} in
	stop) stop_pidfile "$state/registry.pid" ;;
	start) start_registry ;;
	*) die "usage: testenv.sh registry stop|start" ;;
	esac
}

# alias_target ALIAS prints the fingerprint ALIAS points to, and fails
# when there is no such alias.
alias_target() {
	a=$(lxc query "/1.0/images/aliases/$(echo "$1" | sed 's,/,%2F,g')" 2>/dev/null) || return 1
	echo "$a" | jq -er .target
}

# image_refresh NAME: a base-image update for tests (and people) to roll
# out: the image berth/NAME points to, changed (a new
# /etc/berth-build-stamp in its rootfs, and berth.stamp in its
# properties), imported under the same alias. The old image stays, for
# the instances made from it; berth.key stays too, so `up` keeps the
# refreshed image.
image_refresh() {
	require_root
	name=${1:-busybox}
	case $name in busybox | debian-docker) ;; *) die "usage: testenv.sh image refresh [busybox|debian-docker]" ;; esac
	lxd_answers || die "lxd does not answer; run testenv.sh up"
	[ -x "$berth" ] || build_berth
	alias=berth/$name
	old=$(alias_target "$alias") || die "no image $alias; run testenv.sh up"
	src=$cache/$name-$(image_key "$alias")
	[ -f "$src/rootfs.tar.gz" ] || src=$(image_dir "$name")
	stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	mkdir "$tmp/rootfs"
	tar -C "$tmp/rootfs" --numeric-owner -xzf "$src/rootfs.tar.gz"
	echo "$stamp" >"$tmp/rootfs/etc/berth-build-stamp"
	tar -C "$tmp" -xzf "$src/metadata.tar.gz" metadata.yaml
	sed -i -e "s/^creation_date: .*/creation_date: $(date +%s)/" -e '/^  berth.stamp: /d' "$tmp/metadata.yaml"
	echo "  berth.stamp: \"$stamp\"" >>"$tmp/metadata.yaml"
	tar -C "$tmp" -czf "$tmp/metadata.tar.gz" metadata.yaml
	# gzip -1: the rootfs of berth/debian-docker is large, and a test waits.
	tar -C "$tmp/rootfs" --numeric-owner -cf - . | gzip -1 >"$tmp/rootfs.tar.gz"
	"$berth" image import --alias "$alias" "$tmp/metadata.tar.gz" "$tmp/rootfs.tar.gz" >/dev/null ||
		die "berth could not import the refreshed $alias"
	new=$(alias_target "$alias")
	[ "$new" != "$old" ] || die "$alias still points to $old"
	log "$alias refreshed (build stamp $stamp)"
	echo "$alias $old -> $new"
}

cmd_image() {
	case ${1:-} in
	refresh) image_refresh "${2:-}" ;;
	*) die "usage: testenv.sh image refresh [busybox|debian-docker]" ;;
	esac
}

. "$here/cluster.sh"

case ${1:-up} in
up) cmd_up ;;
lxd) fault_lxd "${2:-}" ;;
registry) fault_registry "${2:-}" ;;
image) shift && cmd_image "$@" ;;
cluster) shift && cmd_cluster "$@" ;;
status) cmd_status ;;
sops-path) [ -x "$sops_bin" ] && echo "$sops_bin" || die "no sops CLI at $sops_bin: run testenv.sh up" ;;
down) cmd_down ;;
purge) cmd_purge ;;
*) die "usage: testenv.sh [up|status|sops-path|down|purge|lxd kill|start|registry stop|start|image refresh [IMAGE]|cluster ...]" ;;
esac
