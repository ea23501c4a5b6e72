#!/usr/bin/env bash
# Runs inkan on its embedded default: a CA in ./inkan-data (registry: sled under
# ./inkan-data/db) and a demo client certificate issued from a CSR made by openssl.
# Development only: the generated passphrases are kept in ./inkan-data/dev-secrets (0600).
# Safe to run again: the CA is created once, each run issues one more certificate.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p inkan
inkan=target/release/inkan
data=./inkan-data
secrets=$data/dev-secrets
(umask 077; mkdir -p "$secrets" "$data/demo")
for name in root ca; do
  [ -s "$secrets/$name.pass" ] || (umask 077; openssl rand -base64 24 >"$secrets/$name.pass")
done
pass=(--ca-passphrase-file "$secrets/ca.pass")
if [ ! -f "$data/ca/ca.crt" ]; then
  "$inkan" init --data-dir "$data" --root-passphrase-file "$secrets/root.pass" "${pass[@]}"
fi
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$data/demo/demo.key" \
  -subj /CN=demo -out "$data/demo/demo.csr" 2>/dev/null
"$inkan" issue --data-dir "$data" "${pass[@]}" --csr "$data/demo/demo.csr" --account demo \
  --out "$data/demo/demo.crt"
openssl verify -purpose sslclient -CAfile "$data/root/root.crt" -untrusted "$data/ca/ca.crt" "$data/demo/demo.crt"
"$inkan" list --data-dir "$data"
