#!/bin/sh
# Makes development certificates for otlp-auth-proxy in OUTDIR:
#   ca.crt / ca.key          a development CA (ECDSA P-256, 1 year)
#   server.crt / server.key  leaf for DNS:localhost, IP:127.0.0.1, IP:::1 (serverAuth, 90 days)
#   client.crt / client.key  leaf for CN=dev-client, URI:spiffe://otlp-auth-proxy.dev/client (clientAuth, 90 days)
# Keys are mode 0600. Running it again does nothing while every file exists, the leaves chain
# to the CA, and the server certificate is valid for at least one more day; otherwise it
# makes a fresh set (a new CA invalidates the old leaves, so all six files are replaced).
# These certificates are for local development and tests only; nothing here is committed.
set -eu

usage() {
    echo "usage: $0 OUTDIR" >&2
    exit 2
}
[ $# -eq 1 ] || usage
out=$1
command -v openssl >/dev/null 2>&1 || { echo "$0: openssl is required" >&2; exit 1; }
mkdir -p "$out"

files="ca.crt ca.key server.crt server.key client.crt client.key"

current() {
    for f in $files; do
        [ -s "$out/$f" ] || return 1
    done
    openssl x509 -noout -checkend 86400 -in "$out/server.crt" >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$out/ca.crt" "$out/server.crt" "$out/client.crt" >/dev/null 2>&1 || return 1
}

if current; then
    echo "dev certificates in $out are current; nothing to do"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
umask 077  # keys are created unreadable to others from the start

# A random positive 128-bit serial per certificate.
serial() {
    echo "0x7$(openssl rand -hex 15)"
}

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

# Development CA.
newkey "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days 365 -set_serial "$(serial)" \
    -subj "/O=otlp-auth-proxy development/CN=otlp-auth-proxy dev CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$work/ca.crt"

# leaf NAME SUBJECT EXTENSIONS: a key, a request and a CA-signed certificate.
leaf() {
    name=$1
    subject=$2
    extensions=$3
    newkey "$work/$name.key"
    openssl req -new -key "$work/$name.key" -subj "$subject" -out "$work/$name.csr"
    printf '%s\n' "$extensions" >"$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -set_serial "$(serial)" -sha256 -days 90 -extfile "$work/$name.ext" \
        -out "$work/$name.crt" 2>/dev/null
}

leaf server "/O=otlp-auth-proxy development/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer"

leaf client "/O=otlp-auth-proxy development/CN=dev-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:spiffe://otlp-auth-proxy.dev/client
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer"

openssl verify -CAfile "$work/ca.crt" "$work/server.crt" "$work/client.crt" >/dev/null

# Certificates are public; keys stay 0600.
for f in $files; do
    case $f in
    *.crt) chmod 644 "$work/$f" ;;
    esac
    mv -f "$work/$f" "$out/$f"
done

echo "made $out/ca.crt, $out/ca.key: development CA (ECDSA P-256, 365 days)"
echo "made $out/server.crt, $out/server.key: server for localhost, 127.0.0.1, ::1 (serverAuth, 90 days)"
echo "made $out/client.crt, $out/client.key: client CN=dev-client, spiffe://otlp-auth-proxy.dev/client (clientAuth, 90 days)"
