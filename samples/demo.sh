#!/bin/sh
# make demo: converge the sample apps on the local LXD, then show status.
# The test environment (testenv/testenv.sh up) must be there; make demo
# runs it first. Everything the demo creates belongs to owner "demo":
# "make demo-clean" removes it. It ends with the web app answering over the
# test network (the bridge berthbr0) from this host.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
berth=$(cd "$here/.." && pwd)/bin/berth
repo=${BERTH_DEMO_REPO:-/var/tmp/berth-demo}

# A throwaway config repository, made fresh from samples/ each time.
rm -rf "$repo"
mkdir -p "$repo"
cp -r "$here/apps" "$repo/apps"
cd "$repo"
git init -q -b main
git add -A
git -c user.name="berth demo" -c user.email=demo@localhost commit -qm "Sample apps: web (3 replicas) and worker"

echo "== berth validate"
"$berth" validate --dir apps .
echo
echo "== berth apply (owner demo)"
"$berth" --owner demo apply --repo . --dir apps --yes
echo
echo "== berth status"
"$berth" --owner demo status --repo . --dir apps

# web's replicas and their addresses on berthbr0 (eth0's DHCP lease), from
# LXD: "name address" lines, sorted; a replica without one yet has none.
web_addresses() {
	lxc list --format json | jq -r '.[]
		| select(.config["user.berth.owner"] == "demo" and .config["user.berth.app"] == "web")
		| [.name, ((.state.network.eth0.addresses // [])[] | select(.family == "inet") | .address)]
		| select(length == 2) | join(" ")' | sort
}
echo
echo "== the web app over the network, from this host"
want=$(lxc list --format json | jq '[.[] | select(.config["user.berth.owner"] == "demo" and .config["user.berth.app"] == "web")] | length')
i=0
while [ "$(web_addresses | wc -l)" -lt "$want" ] && [ $i -lt 60 ]; do
	sleep 0.5
	i=$((i + 1))
done
addrs=$(web_addresses)
[ -n "$addrs" ] || { echo "no web replica has an address on berthbr0 (testenv/testenv.sh status)" >&2; exit 1; }
echo "$addrs" | while read -r name addr; do
	printf '%s  $ curl http://%s:8080/\n' "$name" "$addr"
	page=$(curl -fsS --noproxy '*' --max-time 5 "http://$addr:8080/") || { echo "$name did not answer at $addr:8080" >&2; exit 1; }
	printf '       %s\n' "$page"
done

cat <<MSG

The config repository is $repo. Try:
  cd $repo
  sed -i 's/replicas: 3/replicas: 4/; s/hello:1/hello:2/' apps/web.yaml
  git commit -qam "web: 4 replicas of hello:2"
  $berth --owner demo diff --repo . --dir apps HEAD~1 HEAD
  $berth --owner demo apply --repo . --dir apps
  git revert --no-edit HEAD && $berth --owner demo apply --repo . --dir apps --yes
  lxc exec web-0 -- docker ps
  lxc list -c ns4                        # the replicas' addresses on berthbr0
Remove the demo's instances with: make demo-clean
MSG
