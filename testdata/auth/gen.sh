#!/usr/bin/env bash
# Regenerates the test keys for connect tokens (JWT): an HS256 secret, and a key pair per
# public-key algorithm peerd's tests sign with (RS256, ES256, EdDSA), plus a second RSA pair
# whose tokens the first must refuse. Test material only: the private keys are public
# (committed); never use them outside tests.
set -euo pipefail
cd "$(dirname "$0")"
openssl rand -hex 32 > hs256.secret
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key
openssl pkey -in rsa.key -pubout -out rsa.pub.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-other.key
openssl pkey -in rsa-other.key -pubout -out rsa-other.pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
openssl pkey -in ec.key -pubout -out ec.pub.pem
openssl genpkey -algorithm ED25519 -out ed25519.key
openssl pkey -in ed25519.key -pubout -out ed25519.pub.pem
