#!/bin/sh
# make demo-clean: delete every instance of owner "demo" by applying an
# empty config repository (pruning everything needs --allow-mass-prune).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
git -C "$empty" init -q -b main
git -C "$empty" -c user.name="berth demo" -c user.email=demo@localhost commit -q --allow-empty -m "No apps"
"$here/../bin/berth" --owner demo apply --repo "$empty" --yes --allow-mass-prune
