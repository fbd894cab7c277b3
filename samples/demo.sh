#!/bin/sh
# make demo: converge the sample apps on the local LXD, then show status.
# The test environment (testenv/testenv.sh up) must be there; make demo
# runs it first. Everything the demo creates belongs to owner "demo":
# "make demo-clean" removes it.
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
cat <<MSG

The config repository is $repo. Try:
  cd $repo
  sed -i 's/replicas: 3/replicas: 4/; s/hello:1/hello:2/' apps/web.yaml
  git commit -qam "web: 4 replicas of hello:2"
  $berth --owner demo diff --repo . --dir apps HEAD~1 HEAD
  $berth --owner demo apply --repo . --dir apps
  git revert --no-edit HEAD && $berth --owner demo apply --repo . --dir apps --yes
  lxc exec web-0 -- docker ps
Remove the demo's instances with: make demo-clean
MSG
