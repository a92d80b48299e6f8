#!/usr/bin/env bash
# A development token issuer for the gateway, with nothing but openssl (OpenSSL 3 or
# LibreSSL 3.7+: Ed25519). Never for production: there, tokens come from your identity
# provider and the gateway reads its JWKS.
#
#   scripts/dev-jwt.sh keys DIR
#       makes an Ed25519 key pair: DIR/private.pem (the signing key, mode 600) and
#       DIR/jwks.json (its public key, the file GATEWAY_JWT_KEYS_FILE names).
#   scripts/dev-jwt.sh token PRIVATE_PEM ISSUER AUDIENCE SUBJECT "SCOPE …" [SECONDS]
#       prints a JWT (EdDSA) of SUBJECT granting the space-separated scopes, valid for
#       SECONDS (default 3600), for GATEWAY_JWT_ISSUER=ISSUER, GATEWAY_JWT_AUDIENCE=AUDIENCE.
#
# Used by scripts/kind-up.sh (the keys of the kind cluster), scripts/kind-smoke.sh and
# k8s/tests/run.py (tokens for their requests), and the local walkthrough of docs/security.md.
set -euo pipefail

die() {
  printf 'dev-jwt: %s\n' "$*" >&2
  exit 1
}

command -v openssl >/dev/null || die "openssl not found: install it with your package manager"

# base64url without padding (RFC 7515), of stdin.
b64url() {
  openssl base64 -A | tr '+/' '-_' | tr -d '='
}

# Only characters that need no escaping inside a JSON string.
json_safe() {
  [[ $2 =~ ^[][A-Za-z0-9\ :/._@+~=\-]*$ ]] || die "$1 must be letters, digits, spaces and :/._@+~=-: got '$2'"
}

keys() {
  local dir="$1" x
  mkdir -p "$dir"
  (umask 077 && openssl genpkey -algorithm ed25519 -out "$dir/private.pem" 2>/dev/null) ||
    die "openssl cannot make an Ed25519 key ($(openssl version)): OpenSSL 3 or LibreSSL 3.7+ is needed"
  # The raw public key: the last 32 bytes of its DER SubjectPublicKeyInfo (RFC 8410).
  x="$(openssl pkey -in "$dir/private.pem" -pubout -outform DER | tail -c 32 | b64url)"
  printf '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%s","alg":"EdDSA","use":"sig","kid":"dev-%s"}]}\n' \
    "$x" "$(date -u +%Y%m%d%H%M%S)" >"$dir/jwks.json"
}

token() {
  local key="$1" issuer="$2" audience="$3" subject="$4" scope="$5" ttl="${6:-3600}" now header claims message file
  [[ -r $key ]] || die "no readable private key at $key (scripts/dev-jwt.sh keys DIR makes one)"
  [[ $ttl =~ ^[0-9]+$ ]] || die "SECONDS must be a number: got '$ttl'"
  json_safe ISSUER "$issuer"
  json_safe AUDIENCE "$audience"
  json_safe SUBJECT "$subject"
  json_safe SCOPE "$scope"
  now="$(date +%s)"
  header="$(printf '{"alg":"EdDSA","typ":"JWT"}' | b64url)"
  claims="$(printf '{"iss":"%s","aud":"%s","sub":"%s","scope":"%s","iat":%d,"exp":%d}' \
    "$issuer" "$audience" "$subject" "$scope" "$now" "$((now + ttl))" | b64url)"
  message="$header.$claims"
  # A file, not a pipe: openssl reads Ed25519's whole input at once, sized beforehand.
  file="$(mktemp)"
  # shellcheck disable=SC2064 # the path now: `file` is local, gone when the trap runs
  trap "rm -f '$file'" EXIT
  printf '%s' "$message" >"$file"
  # -rawin: Ed25519 signs the message itself, not a digest of it.
  printf '%s.%s\n' "$message" "$(openssl pkeyutl -sign -inkey "$key" -rawin -in "$file" | b64url)"
  rm -f "$file"
}

case "${1:-}" in
  keys)
    (($# == 2)) || die "usage: scripts/dev-jwt.sh keys DIR"
    keys "$2"
    ;;
  token)
    (($# == 6 || $# == 7)) || die "usage: scripts/dev-jwt.sh token PRIVATE_PEM ISSUER AUDIENCE SUBJECT \"SCOPE …\" [SECONDS]"
    shift
    token "$@"
    ;;
  *) die "usage: scripts/dev-jwt.sh keys DIR | token PRIVATE_PEM ISSUER AUDIENCE SUBJECT \"SCOPE …\" [SECONDS]" ;;
esac
