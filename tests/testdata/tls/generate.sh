#!/bin/sh
# Regenerates the test PKI (run from this directory; needs openssl). The files are committed so
# tests need no tool at run time. Nothing here is secret: they exist only for tests.
#   ca.pem / ca-key.pem            a root CA (EC P-256), Istio's ROOTCA role
#   workload.pem / workload-key.pem a workload certificate with a SPIFFE URI SAN, key in PKCS#8
#   rotated.pem / rotated-key.pem   the same identity, re-issued (a rotation), RSA key in PKCS#1
set -eu
days=36500
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -days "$days" -subj "/O=tern.test/CN=Tern Test Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
issue() { # name keyfile
  openssl req -new -key "$2" -subj "/O=tern.test" -out "$1.csr"
  printf 'subjectAltName=URI:spiffe://cluster.local/ns/default/sa/tern\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext" ca.srl
}
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out workload-key.pem
issue workload workload-key.pem
openssl genrsa -traditional -out rotated-key.pem 2048 2>/dev/null
issue rotated rotated-key.pem
# The test control plane's serving certificate (xds_tls tests): DNS, URI and IP SANs, key PKCS#8.
#   xds-server.pem / xds-server-key.pem
#   other-ca.pem                    an unrelated root CA (its key is thrown away): the wrong trust
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out xds-server-key.pem
openssl req -new -key xds-server-key.pem -subj "/O=tern.test/CN=xds.tern.test" -out xds-server.csr
printf 'subjectAltName=DNS:xds.tern.test,URI:spiffe://cluster.local/ns/istio-system/sa/istiod,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >xds-server.ext
openssl x509 -req -in xds-server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
  -extfile xds-server.ext -out xds-server.pem
rm -f xds-server.csr xds-server.ext ca.srl
openssl ecparam -name prime256v1 -genkey -noout -out other-ca-key.tmp
openssl req -x509 -new -key other-ca-key.tmp -days "$days" -subj "/O=elsewhere.test/CN=Unrelated Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out other-ca.pem
rm -f other-ca-key.tmp
