# shellcheck shell=sh
# The cluster test environment, sourced by testenv.sh ("testenv.sh cluster
# ..."): three LXD daemons on this one machine, each with its own LXD_DIR
# and a loopback address, forming one LXD cluster. It is separate from the
# single-host LXD of `testenv.sh up`; both can run at once.
#
#   members   m1 127.0.0.2:8443, m2 127.0.0.3:8443, m3 127.0.0.4:8443,
#             LXD_DIR $cl_state/<member>; all three hold the database,
#             so the cluster keeps quorum when one is lost
#   storage   pool "local", driver dir, on each member's own disk
#   images    berth/busybox and berth/debian-docker, from testenv's cache
#   network   host bridge berthcl0 10.213.88.1/22 that this script
#             creates, with its own dnsmasq (DHCP; DNS forwarding
#             berth.internal to 10.213.88.1:8053, like berthbr0), no NAT,
#             no uplink: one L2 segment for every member's instances, like
#             a rack switch. LXD members on one host cannot each create a
#             managed bridge of the same name, hence a host bridge and NICs
#             "nictype: bridged, parent: berthcl0".
#   profile   berth-test: nesting, syscall intercepts, eth0 on berthcl0
#             and the proxy to the registry at 127.0.0.1:5000 (the
#             single-host testenv's registry), like the single-host one
#   trust     a client certificate in $cl_state, trusted by the cluster;
#             `testenv.sh cluster env` prints the BERTH_LXD* variables
#
# Instance names are cluster-wide, and LXD names an instance's cgroup after
# it on the host: keep cluster test instances apart from single-host ones
# (the tests use berth-cl-*).

cl_state=${BERTH_CLUSTER_STATE:-/var/lib/berth-cluster}
cl_members="m1 m2 m3"
cl_port=8443
cl_pool=local
cl_bridge=berthcl0
cl_bridge_addr=10.213.88.1
# A /22: room for a thousand instances' leases, for scale runs across the
# cluster (a /24 would run out at 253).
cl_bridge_cidr=$cl_bridge_addr/22
cl_dhcp_range=10.213.88.2,10.213.91.254,1h
# How long a member may take to answer after its daemon is started; a
# clustered member is ready only once the database has quorum.
cl_ready_timeout=120

member_addr() {
	case $1 in
	m1) echo 127.0.0.2 ;;
	m2) echo 127.0.0.3 ;;
	m3) echo 127.0.0.4 ;;
	*) die "unknown cluster member '$1' (want m1, m2 or m3)" ;;
	esac
}

member_dir() { echo "$cl_state/$1"; }

# mlxc MEMBER ARGS...: lxc against MEMBER's own socket, bounded in time so
# a wedged daemon fails the script instead of hanging it.
mlxc() {
	mlxc_dir=$(member_dir "$1")
	shift
	LXD_DIR=$mlxc_dir timeout 300 lxc "$@"
}

# member_pid MEMBER prints the pid of MEMBER's daemon and succeeds when it
# runs. The pid file alone is not proof: after a reboot its number may
# belong to another process, so the command line must name the member's
# log file too.
member_pid() {
	f=$(member_dir "$1")/daemon.pid
	[ -f "$f" ] || return 1
	pid=$(cat "$f")
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "--logfile $(member_dir "$1")/lxd.log" || return 1
	echo "$pid"
}

# spawn_member MEMBER starts MEMBER's daemon unless it runs; it does not
# wait: a clustered member only gets ready once enough of the others run.
spawn_member() {
	member_pid "$1" >/dev/null && return 0
	d=$(member_dir "$1")
	mkdir -p "$d"
	chmod 0711 "$d"
	log "starting member $1 ($(member_addr "$1"):$cl_port, LXD_DIR $d)"
	# Detached from our session, like the single-host daemon, so it
	# outlives the make or test process that started it.
	LXD_DIR=$d setsid lxd --group lxd --logfile "$d/lxd.log" >>"$d/daemon.out" 2>&1 </dev/null &
	echo $! >"$d/daemon.pid"
}

# wait_member MEMBER waits until MEMBER's daemon is ready, and fails clearly
# when it dies or takes longer than cl_ready_timeout.
wait_member() {
	d=$(member_dir "$1")
	deadline=$(($(date +%s) + cl_ready_timeout))
	until LXD_DIR=$d lxd waitready --timeout=2 >/dev/null 2>&1; do
		member_pid "$1" >/dev/null || die "member $1's daemon exited; last lines of $d/lxd.log:
$(tail -n 5 "$d/lxd.log" 2>/dev/null)"
		[ "$(date +%s)" -lt "$deadline" ] || die "member $1 not ready after ${cl_ready_timeout}s (a clustered member needs two of three running); see $d/lxd.log"
	done
}

member_clustered() {
	[ "$(mlxc "$1" query /1.0 2>/dev/null | jq -r .environment.server_clustered)" = true ]
}

# bootstrap_cluster: m1 founds the cluster with the storage pool and the
# default profile's root disk; the trust password lets m2 and m3 join.
bootstrap_cluster() {
	log "bootstrapping the cluster on m1"
	mlxc m1 query /1.0 >/dev/null || die "member m1 does not answer"
	LXD_DIR=$(member_dir m1) lxd init --preseed <<YAML || die "lxd init on m1 failed; see $(member_dir m1)/lxd.log"
config:
  core.https_address: $(member_addr m1):$cl_port
  core.trust_password: "$(cat "$cl_state/trust_password")"
  images.auto_update_interval: "0"
storage_pools:
- name: $cl_pool
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: $cl_pool
      type: disk
cluster:
  server_name: m1
  enabled: true
YAML
}

# join_member MEMBER joins a fresh MEMBER through m1. Its pool's source is
# member-specific: "" lets LXD put it in the member's own LXD_DIR.
join_member() {
	log "joining $1 to the cluster"
	LXD_DIR=$(member_dir "$1") lxd init --preseed <<YAML || die "member $1 could not join; see $(member_dir "$1")/lxd.log (testenv.sh cluster purge starts over)"
cluster:
  enabled: true
  server_name: $1
  server_address: $(member_addr "$1"):$cl_port
  cluster_address: $(member_addr m1):$cl_port
  cluster_password: "$(cat "$cl_state/trust_password")"
  cluster_certificate_path: $(member_dir m1)/cluster.crt
  member_config:
  - entity: storage-pool
    name: $cl_pool
    key: source
    value: ""
YAML
}

ensure_members() {
	[ -f "$cl_state/trust_password" ] || {
		mkdir -p "$cl_state"
		chmod 0711 "$cl_state"
		(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$cl_state/trust_password")
	}
	# All at once: after a reboot no member gets ready before two run.
	for m in $cl_members; do spawn_member "$m"; done
	for m in $cl_members; do wait_member "$m"; done
	member_clustered m1 || bootstrap_cluster
	for m in $cl_members; do
		[ "$m" = m1 ] || member_clustered "$m" || join_member "$m"
	done
	# The certificate every member presents, pinned by clients.
	cp "$(member_dir m1)/cluster.crt" "$cl_state/cluster.crt"
}

# ensure_client_cert: a client certificate made once, kept in $cl_state,
# and trusted by the cluster.
ensure_client_cert() {
	if [ ! -f "$cl_state/client.crt" ]; then
		log "creating the client certificate $cl_state/client.crt"
		(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes \
			-days 3650 -subj "/CN=berth-testenv" -keyout "$cl_state/client.key" -out "$cl_state/client.crt" 2>/dev/null) ||
			die "openssl could not make a client certificate"
	fi
	fp=$(openssl x509 -in "$cl_state/client.crt" -outform der | sha256sum | cut -d' ' -f1)
	mlxc m1 query "/1.0/certificates/$fp" >/dev/null 2>&1 && return 0
	der=$(openssl x509 -in "$cl_state/client.crt" -outform der | base64 -w0)
	mlxc m1 query -X POST /1.0/certificates --data "{\"type\":\"client\",\"name\":\"berth-testenv\",\"certificate\":\"$der\"}" >/dev/null ||
		die "could not trust the client certificate"
}

# ensure_cluster_bridge: the host bridge all members' instances share, no
# NAT and no uplink, like berthbr0.
ensure_cluster_bridge() {
	if ! ip link show "$cl_bridge" >/dev/null 2>&1; then
		if ip -4 -o addr show | grep -q " inet ${cl_bridge_addr%.*}\."; then
			die "$cl_bridge_cidr clashes with an address of this host (ip -4 addr): change cl_bridge_addr in $here/cluster.sh"
		fi
		log "creating bridge $cl_bridge ($cl_bridge_cidr, no NAT, no uplink)"
		ip link add "$cl_bridge" type bridge
	fi
	if ! ip -4 addr show dev "$cl_bridge" | grep -q " $cl_bridge_cidr "; then
		# An address from an older version of this script goes.
		ip -4 addr flush dev "$cl_bridge"
		ip addr add "$cl_bridge_cidr" dev "$cl_bridge"
	fi
	ip link set "$cl_bridge" up
}

dnsmasq_pid() {
	[ -f "$cl_state/dnsmasq.pid" ] || return 1
	pid=$(cat "$cl_state/dnsmasq.pid")
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "--interface=$cl_bridge" || return 1
	echo "$pid"
}

# ensure_cluster_dnsmasq: DHCP for the bridge (the instances' init asks
# for a lease on eth0), and DNS that forwards the zone berth serves. It
# listens on the bridge's address only: nothing else on the host changes.
# One started with another range (an older version of this script) is
# replaced.
ensure_cluster_dnsmasq() {
	if pid=$(dnsmasq_pid); then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--dhcp-range=$cl_dhcp_range " && return 0
		log "restarting dnsmasq on $cl_bridge (new DHCP range)"
		kill "$pid"
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	log "starting dnsmasq on $cl_bridge"
	touch "$cl_state/dnsmasq.leases"
	setsid dnsmasq --keep-in-foreground --conf-file=/dev/null --strict-order --bind-interfaces \
		--except-interface=lo --interface="$cl_bridge" --listen-address="$cl_bridge_addr" \
		--no-resolv --no-hosts --server="/$dns_zone/$cl_bridge_addr#$dns_port" \
		--dhcp-range="$cl_dhcp_range" --dhcp-authoritative \
		--dhcp-rapid-commit --dhcp-no-override --dhcp-leasefile="$cl_state/dnsmasq.leases" \
		--pid-file= --user=root --log-facility="$cl_state/dnsmasq.log" \
		>>"$cl_state/dnsmasq.log" 2>&1 </dev/null &
	echo $! >"$cl_state/dnsmasq.pid"
	i=0
	until ss -lun | grep -q "$cl_bridge_addr:67 \|0.0.0.0%$cl_bridge:67 \|\*%$cl_bridge:67 "; do
		dnsmasq_pid >/dev/null || die "dnsmasq exited; see $cl_state/dnsmasq.log"
		i=$((i + 1))
		[ $i -lt 100 ] || die "dnsmasq does not listen for DHCP on $cl_bridge; see $cl_state/dnsmasq.log"
		sleep 0.1
	done
}

ensure_cluster_profile() {
	mlxc m1 profile show berth-test >/dev/null 2>&1 || mlxc m1 profile create berth-test >/dev/null
	mlxc m1 profile set berth-test security.nesting=true
	mlxc m1 profile set berth-test security.syscalls.intercept.mknod=true
	mlxc m1 profile set berth-test security.syscalls.intercept.setxattr=true
	if ! mlxc m1 profile device get berth-test registry type >/dev/null 2>&1; then
		mlxc m1 profile device add berth-test registry proxy \
			listen=tcp:$registry_addr connect=tcp:$registry_addr bind=instance >/dev/null
	fi
	if ! mlxc m1 profile device get berth-test eth0 type >/dev/null 2>&1; then
		mlxc m1 profile device add berth-test eth0 nic nictype=bridged parent=$cl_bridge name=eth0 >/dev/null
	elif [ "$(mlxc m1 profile device get berth-test eth0 parent)" != "$cl_bridge" ]; then
		mlxc m1 profile device set berth-test eth0 parent=$cl_bridge
	fi
}

# cluster_berth ARGS...: berth itself against the cluster, over HTTPS with
# the client certificate: importing the images is its first use.
cluster_berth() {
	BERTH_LXD=https://$(member_addr m1):$cl_port BERTH_LXD_CERT=$cl_state/client.crt \
		BERTH_LXD_KEY=$cl_state/client.key BERTH_LXD_SERVER_CERT=$cl_state/cluster.crt \
		LXD_DIR= "$berth" "$@"
}

cluster_image_key() {
	fp=$(mlxc m1 query "/1.0/images/aliases/$(echo "$1" | sed 's,/,%2F,g')" 2>/dev/null | jq -r .target) || return 0
	mlxc m1 query "/1.0/images/$fp" 2>/dev/null | jq -r '.properties["berth.key"] // empty'
}

# ensure_cluster_images imports the single-host environment's current
# builds (building them into the cache when they are not there).
ensure_cluster_images() {
	for name in busybox debian-docker; do
		dir=$(image_dir "$name")
		key=${dir##*-}
		[ "$(cluster_image_key "berth/$name")" = "$key" ] && continue
		log "importing berth/$name into the cluster"
		cluster_berth image import --alias "berth/$name" --prune-old "$dir/metadata.tar.gz" "$dir/rootfs.tar.gz" >/dev/null ||
			die "berth could not import berth/$name into the cluster"
	done
}

# sweep_cluster_leftovers deletes the instances and projects a killed test
# run left (the berth end-to-end tests run each in a berth-cl-* project).
sweep_cluster_leftovers() {
	for i in $(mlxc m1 list --format csv -c n | grep -E '^berth-cl-' || true); do
		log "deleting leftover instance $i"
		mlxc m1 delete -f "$i" || true
	done
	for p in $(mlxc m1 project list --format csv | cut -d, -f1 | sed 's/ (current)$//' | grep -E '^berth-cl-' || true); do
		log "deleting leftover project $p"
		for i in $(mlxc m1 list --project "$p" --format csv -c n || true); do
			mlxc m1 delete -f --project "$p" "$i" || true
		done
		mlxc m1 project delete "$p" || true
	done
}

cluster_up() {
	require_root
	start=$(date +%s)
	install_packages
	build_berth
	ensure_cluster_bridge
	mkdir -p "$cl_state"
	chmod 0711 "$cl_state"
	ensure_cluster_dnsmasq
	ensure_members
	ensure_client_cert
	sweep_cluster_leftovers
	ensure_cluster_profile
	ensure_cluster_images
	registry_answers || log "warning: no registry on $registry_addr (testenv.sh up starts it); instances will not reach it"
	log "cluster ready in $(($(date +%s) - start))s"
}

cluster_status() {
	for m in $cl_members; do
		if pid=$(member_pid "$m"); then
			echo "member $m: daemon pid $pid, $(member_addr "$m"):$cl_port, rss $(($(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MiB"
		else
			echo "member $m: not running"
		fi
	done
	for m in $cl_members; do
		if member_pid "$m" >/dev/null && mlxc "$m" query /1.0 >/dev/null 2>&1; then
			mlxc "$m" query '/1.0/cluster/members?recursion=1' |
				jq -r '.[] | "cluster member \(.server_name): \(.status) (\(.message)), \(.roles | join(" "))"'
			for a in berth/busybox berth/debian-docker; do
				echo "image $a: key $(cluster_image_key "$a")"
			done
			echo "profile berth-test: $(mlxc "$m" profile device get berth-test eth0 parent 2>/dev/null || echo missing)"
			echo "instances: $(mlxc "$m" list --format csv -c n | wc -l)"
			break
		fi
	done
	if ip link show "$cl_bridge" >/dev/null 2>&1; then
		echo "bridge $cl_bridge: $(ip -4 -o addr show dev "$cl_bridge" | awk '{print $4}')"
	else
		echo "bridge $cl_bridge: missing"
	fi
	pid=$(dnsmasq_pid) && echo "dnsmasq: pid $pid, $(wc -l <"$cl_state/dnsmasq.leases") leases" || echo "dnsmasq: not running"
}

# cluster_env prints what berth reads in place of its LXD flags.
cluster_env() {
	for f in client.crt client.key cluster.crt; do
		[ -f "$cl_state/$f" ] || die "no cluster environment in $cl_state; run testenv.sh cluster up"
	done
	echo "export BERTH_LXD=https://$(member_addr m1):$cl_port"
	echo "export BERTH_LXD_CERT=$cl_state/client.crt"
	echo "export BERTH_LXD_KEY=$cl_state/client.key"
	echo "export BERTH_LXD_SERVER_CERT=$cl_state/cluster.crt"
	echo "export BERTH_CLUSTER=1"
	echo "export BERTH_CLUSTER_MEMBERS=$(echo $cl_members | tr ' ' ,)"
	urls=""
	for m in $cl_members; do urls="$urls${urls:+,}https://$(member_addr "$m"):$cl_port"; done
	echo "export BERTH_CLUSTER_URLS=$urls"
	echo "export BERTH_CLUSTER_TESTENV=$here/testenv.sh"
}

# stop_member MEMBER: a clean shutdown, else kill -9 after 60s.
stop_member() {
	pid=$(member_pid "$1") || return 0
	LXD_DIR=$(member_dir "$1") timeout 60 lxd shutdown --timeout=50 >/dev/null 2>&1 || true
	# lxd shutdown may return before the daemon has exited.
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if kill -0 "$pid" 2>/dev/null; then
		log "member $1 did not shut down; kill -9"
		kill -9 "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f "$(member_dir "$1")/daemon.pid"
}

# leftover_instance_processes lists the liblxc monitors of the cluster's
# instances: they outlive a daemon that was killed.
leftover_instance_processes() {
	ps -eo pid=,args= | grep -F "[lxc monitor] $cl_state/" | grep -v grep || true
}

cluster_down() {
	require_root
	# A member killed earlier (cluster kill) left its instances running
	# with no daemon to stop them: bring it back first, while the others
	# run and the database has quorum.
	running=
	for m in $cl_members; do
		# A frozen member (cluster freeze) could not shut down.
		pid=$(member_pid "$m") && kill -CONT "$pid" && running=yes
	done
	if [ -n "$running" ]; then
		for m in $cl_members; do spawn_member "$m"; done
		for m in $cl_members; do (wait_member "$m") || log "warning: member $m did not come back; its instances may keep running"; done
	fi
	# Instances first, through the cluster while it has all its members:
	# a member that shuts down stops its own, but one killed earlier
	# would leave them running.
	for m in $cl_members; do
		if member_pid "$m" >/dev/null && mlxc "$m" query /1.0 >/dev/null 2>&1; then
			for p in $(mlxc "$m" project list --format csv | cut -d, -f1 | sed 's/ (current)$//'); do
				mlxc "$m" stop --all --force --project "$p" >/dev/null 2>&1 || true
			done
			break
		fi
	done
	# One at a time, the first one last: a member shuts down cleanly only
	# while the database has quorum without it, and the last one alone
	# is the whole database.
	for m in m3 m2 m1; do stop_member "$m"; done
	if pid=$(dnsmasq_pid); then
		kill "$pid" 2>/dev/null || true
	fi
	rm -f "$cl_state/dnsmasq.pid"
	ip link show "$cl_bridge" >/dev/null 2>&1 && ip link del "$cl_bridge"
	left=$(leftover_instance_processes)
	[ -z "$left" ] || log "warning: instance processes left running:
$left"
	log "cluster down (state kept in $cl_state; testenv.sh cluster purge deletes it)"
}

# cluster_purge: down, then forget the cluster: its directories, images,
# instances and certificates. Images stay cached in $cache.
cluster_purge() {
	cluster_down
	# Daemons may leave mounts under their LXD_DIR (shmounts, devlxd).
	grep -F " $cl_state/" /proc/mounts | awk '{print $2}' | sort -r | while read -r mnt; do
		umount -l "$mnt" || true
	done
	rm -rf "$cl_state"
	log "cluster purged"
}

cluster_kill() {
	require_root
	member_addr "$1" >/dev/null
	pid=$(member_pid "$1") || die "member $1 is not running"
	kill -9 "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	log "member $1 killed (pid $pid); its instances keep running"
}

# cluster_start MEMBER: back, once the cluster sees it Online again (its
# daemon answers a little before its first heartbeat lands).
cluster_start() {
	require_root
	member_addr "$1" >/dev/null
	spawn_member "$1"
	wait_member "$1"
	i=0
	until [ "$(mlxc "$1" query "/1.0/cluster/members/$1" 2>/dev/null | jq -r .status)" = Online ]; do
		i=$((i + 1))
		[ $i -lt 120 ] || die "member $1 answers but the cluster does not see it Online after 60s"
		sleep 0.5
	done
	# m1 forwards calls on an instance to its member only once it has an
	# event connection to it again ("Missing event connection with target
	# cluster member" until then): wait for that on one of its instances.
	if [ "$1" != m1 ]; then
		inst=$(mlxc m1 query '/1.0/instances?recursion=1&all-projects=true' |
			jq -r --arg m "$1" '[.[] | select(.location == $m)][0] // empty | "\(.name)?project=\(.project)"')
		i=0
		while [ -n "$inst" ] && ! mlxc m1 query "/1.0/instances/$inst" >/dev/null 2>&1; do
			i=$((i + 1))
			[ $i -lt 60 ] || die "member $1 is Online but m1 cannot reach its instances after 60s"
			sleep 1
		done
	fi
	log "member $1 is back"
}

# cluster_freeze MEMBER: SIGSTOP of the member's daemon, a member that
# hangs: connections to it are accepted by the kernel but never answered,
# as with a host lost behind a network partition. thaw is SIGCONT.
cluster_freeze() {
	require_root
	member_addr "$1" >/dev/null
	pid=$(member_pid "$1") || die "member $1 is not running"
	kill -STOP "$pid"
	log "member $1 frozen (pid $pid)"
}

cluster_thaw() {
	require_root
	member_addr "$1" >/dev/null
	pid=$(member_pid "$1") || die "member $1 is not running"
	kill -CONT "$pid"
	cluster_start "$1"
}

cmd_cluster() {
	case ${1:-} in
	up) cluster_up ;;
	down) cluster_down ;;
	purge) cluster_purge ;;
	status) cluster_status ;;
	env) cluster_env ;;
	kill) cluster_kill "${2:-}" ;;
	start) cluster_start "${2:-}" ;;
	freeze) cluster_freeze "${2:-}" ;;
	thaw) cluster_thaw "${2:-}" ;;
	*) die "usage: testenv.sh cluster up|down|purge|status|env|kill MEMBER|start MEMBER|freeze MEMBER|thaw MEMBER" ;;
	esac
}
