#!/usr/bin/env bash
# A private CA and one certificate per service, for TLS and mutual TLS between the
# services (shared/src/tls.rs), made with openssl. For development and kind only: a
# production cluster gets its certificates from its own CA (cert-manager, Vault, …).
#
#   scripts/tls-certs.sh DIR [NAMESPACE]
#
# writes DIR/ca.crt and DIR/ca.key (kept if they exist, so that rerunning renews the
# service certificates under the same CA), and for each service of services/*:
# DIR/<service>/{tls.crt,tls.key,ca.crt}, the layout of the Secrets that
# k8s/components/tls mounts. Each certificate is good for server and client
# authentication (a service is both), for the names a client dials: <service>,
# <service>.<NAMESPACE>, <service>.<NAMESPACE>.svc, <service>.<NAMESPACE>.svc.cluster.local,
# and localhost and 127.0.0.1 (the local stack, kubectl port-forward).
#
# Environment: TLS_CERT_DAYS (service certificates' lifetime, default 90),
# TLS_CA_DAYS (the CA's, default 365). Keys are ECDSA P-256, readable by you only.
# Never commit DIR: target/ is git-ignored, which is where `make`'s users put it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:?usage: scripts/tls-certs.sh DIR [NAMESPACE]}"
namespace="${2:-grpc-template}"
cert_days="${TLS_CERT_DAYS:-90}"
ca_days="${TLS_CA_DAYS:-365}"

log() { printf 'tls-certs: %s\n' "$*"; }
command -v openssl >/dev/null || {
  log "openssl not found: install it (Debian/Ubuntu: apt-get install openssl; macOS: brew install openssl)" >&2
  exit 1
}

umask 077
mkdir -p "$dir"
if [[ -f "$dir/ca.key" && -f "$dir/ca.crt" ]]; then
  log "reusing the CA in $dir/ca.crt"
else
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days "$ca_days" -subj "/CN=grpc-rust-template development CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  log "created a CA valid for $ca_days days: $dir/ca.crt"
fi

for service_dir in "$root"/services/*/; do
  service="$(basename "$service_dir")"
  out="$dir/$service"
  mkdir -p "$out"
  names="DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc"
  names+=",DNS:$service.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$service" -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
  openssl x509 -req -in "$out/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -CAserial "$dir/ca.srl" -days "$cert_days" -out "$out/tls.crt" \
    -extfile <(printf '%s\n' \
      "subjectAltName=$names" \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
  rm -f "$out/tls.csr"
  cp "$dir/ca.crt" "$out/ca.crt"
  log "$service: $out/tls.crt (valid for $cert_days days)"
done
