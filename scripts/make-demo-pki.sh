#!/usr/bin/env bash
# Makes a demo PKI with the openssl CLI, the same steps docs/pki.md explains:
#   root CA (trusted by Portcullis for client certificates and by clients for the server)
#   └─ client CA (intermediate) ─ partner-a (good), partner-revoked (on the CRL)
#   server certificates (ECDSA P-256 and RSA 2048) for localhost / 127.0.0.1 / ::1
#   rogue CA ─ rogue client (a CA Portcullis does not trust)
# Usage: scripts/make-demo-pki.sh DIR
set -euo pipefail
dir=${1:?usage: make-demo-pki.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
rsa_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

cat > ext.cnf <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

# issue NAME SUBJECT ISSUER SECTION [DAYS]: signs NAME.key's CSR with ISSUER.
issue() {
  local name=$1 subject=$2 issuer=$3 section=$4 days=${5:-365}
  openssl req -new -key "$name.key.pem" -subj "$subject" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA "$issuer.cert.pem" -CAkey "$issuer.key.pem" -CAcreateserial \
    -days "$days" -sha256 -extfile ext.cnf -extensions "$section" -out "$name.cert.pem" 2>/dev/null
  rm -f "$name.csr"
}

ec_key root-ca.key.pem
openssl req -new -x509 -key root-ca.key.pem -subj "/C=GB/O=Portcullis Demo/CN=Portcullis Demo Root CA" \
  -days 3650 -sha256 -config ext.cnf -extensions ca -out root-ca.cert.pem 2>/dev/null

ec_key client-ca.key.pem
issue client-ca "/C=GB/O=Portcullis Demo/CN=Portcullis Demo Client CA" root-ca ca 1825

ec_key server-ec.key.pem
issue server-ec "/C=GB/O=Portcullis Demo/CN=localhost" root-ca server
cat server-ec.cert.pem > server-ec.chain.pem
rsa_key server-rsa.key.pem
issue server-rsa "/C=GB/O=Portcullis Demo/CN=localhost" root-ca server
cat server-rsa.cert.pem > server-rsa.chain.pem

for client in partner-a partner-revoked; do
  ec_key "$client.key.pem"
  issue "$client" "/C=GB/O=Partner Bank/CN=$client" client-ca client
  # Clients send their intermediate; Portcullis trusts only the root.
  cat "$client.cert.pem" client-ca.cert.pem > "$client.chain.pem"
done

ec_key rogue-ca.key.pem
openssl req -new -x509 -key rogue-ca.key.pem -subj "/O=Rogue/CN=Rogue CA" -days 365 -sha256 \
  -config ext.cnf -extensions ca -out rogue-ca.cert.pem 2>/dev/null
ec_key rogue-client.key.pem
issue rogue-client "/O=Rogue/CN=rogue-client" rogue-ca client

# CRL of the client CA revoking partner-revoked. `openssl ca` keeps its state
# in an index file; it is made here from the certificate itself.
serial=$(openssl x509 -in partner-revoked.cert.pem -noout -serial | cut -d= -f2)
enddate=$(date -u -d "$(openssl x509 -in partner-revoked.cert.pem -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
subject=$(openssl x509 -in partner-revoked.cert.pem -noout -subject -nameopt compat | sed 's/^subject=//')
printf 'R\t%s\t%s\t%s\tunknown\t%s\n' "$enddate" "$(date -u +%y%m%d%H%M%SZ)" "$serial" "$subject" > client-ca.index
cat > crl.cnf <<CNF
[ca]
default_ca = client_ca
[client_ca]
database = client-ca.index
crlnumber = client-ca.crlnumber
default_md = sha256
default_crl_days = 30
CNF
echo 01 > client-ca.crlnumber
openssl ca -config crl.cnf -gencrl -keyfile client-ca.key.pem -cert client-ca.cert.pem \
  -out client-ca.crl.pem 2>/dev/null
# A CRL for every CA in the client chain lets crl_scope = "chain" work too.
echo 01 > root-ca.crlnumber
: > root-ca.index
sed -e 's/client-ca/root-ca/g' crl.cnf > root-crl.cnf
openssl ca -config root-crl.cnf -gencrl -keyfile root-ca.key.pem -cert root-ca.cert.pem \
  -out root-ca.crl.pem 2>/dev/null
rm -f ext.cnf crl.cnf root-crl.cnf ./*.srl ./*.old ./*.attr
chmod 644 ./*.cert.pem ./*.chain.pem ./*.crl.pem
echo "demo PKI written to $dir"
