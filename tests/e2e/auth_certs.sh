#!/bin/bash
# Makes the certificates of the TLS tests with openssl, into DIR (not a test):
#   ca.pem ca.key            the test CA
#   server.pem server.key    CN=casboxd, SAN IP:127.0.0.1 and DNS:localhost, signed by ca
#   ci.pem ci.key, dev.pem dev.key, stranger.pem stranger.key   client certificates (CN=...)
#   other-ca.pem, other.pem other.key   another CA and a client certificate it signed
#   server-other.pem         the server's key certified by other-ca (rotation)
#   expired.pem, future.pem  server certificates outside their validity (key server.key)
#   wrong.key                a key that matches none of them
# Keys are mode 0600. Usage: auth_certs.sh DIR
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 3 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# leaf CA NAME CN EXT [KEY]: a certificate NAME.pem signed by CA.
leaf() {
  local ca="$1" name="$2" cn="$3" ext="$4" k="${5:-$2.key}"
  [ -f "$k" ] || key "$k"
  openssl req -new -key "$k" -out "$name.csr" -subj "/CN=$cn"
  printf '%s\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
    -out "$name.pem" -days 2 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

# dated NAME START END: a server certificate for server.key with set dates
# (openssl ca is the one that takes -startdate/-enddate).
dated() {
  local name="$1"
  mkdir -p "ca-db"
  : > ca-db/index.txt
  [ -f ca-db/serial ] || echo 1000 > ca-db/serial
  cat > ca-db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
dir = ca-db
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
CNF
  openssl req -new -key server.key -out "$name.csr" -subj "/CN=casboxd"
  openssl ca -batch -config ca-db/ca.cnf -in "$name.csr" -out "$name.pem" -notext \
    -startdate "$2" -enddate "$3" 2>/dev/null
  rm -f "$name.csr"
}

ca ca casbox-test-ca
ca other-ca casbox-other-ca
server_ext="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
client_ext="extendedKeyUsage=clientAuth"
leaf ca server casboxd "$server_ext"
for n in ci dev stranger worker; do leaf ca "$n" "$n" "$client_ext"; done
leaf other-ca other ci "$client_ext"   # same CN as a known one, wrong CA
leaf other-ca server-other casboxd "$server_ext" server.key   # the server's key, another CA
dated expired 20200101000000Z 20200201000000Z
dated future 20990101000000Z 20991231000000Z
key wrong.key
chmod 600 ./*.key
