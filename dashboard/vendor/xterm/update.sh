#!/usr/bin/env bash
# Refreshes the vendored xterm.js from the npm registry: update.sh XTERM_VERSION FIT_VERSION
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@xterm/xterm@$1" "@xterm/addon-fit@$2" >/dev/null)
tar xzf "$work"/xterm-xterm-"$1".tgz -C "$work" && mv "$work/package" "$work/xterm"
tar xzf "$work"/xterm-addon-fit-"$2".tgz -C "$work" && mv "$work/package" "$work/fit"
sed '/^\/\/# sourceMappingURL=/d' "$work/xterm/lib/xterm.mjs" > xterm.mjs
sed '/^\/\/# sourceMappingURL=/d' "$work/fit/lib/addon-fit.mjs" > addon-fit.mjs
cp "$work/xterm/css/xterm.css" xterm.css
cp "$work/xterm/LICENSE" LICENSE
cp "$work/fit/LICENSE" LICENSE.addon-fit
echo "now update the versions in README.md"
