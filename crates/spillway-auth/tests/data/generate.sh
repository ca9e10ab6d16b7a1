#!/bin/sh
# Regenerates the test keys and their public JWKs (run from this directory; needs openssl and
# python3). The private keys exist only to sign test tokens; nothing else trusts them.
set -eu
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_a.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_b.pem
openssl pkey -in rsa_a.pem -pubout -out rsa_a.pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec_p256.pem
openssl genpkey -algorithm ED25519 -out ed25519.pem
python3 - <<'PY'
import base64, json, subprocess

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def der_pub(pem: str) -> bytes:
    return subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                          check=True, capture_output=True).stdout

def rsa_jwk(pem: str, kid: str) -> dict:
    out = subprocess.run(["openssl", "rsa", "-in", pem, "-noout", "-modulus"],
                         check=True, capture_output=True, text=True).stdout
    n = bytes.fromhex(out.strip().split("=", 1)[1])
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}

def ec_jwk(pem: str, kid: str) -> dict:
    point = der_pub(pem)[-65:]  # uncompressed 0x04 || x || y at the end of the SPKI
    assert point[0] == 4
    return {"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:])}

def ed_jwk(pem: str, kid: str) -> dict:
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(der_pub(pem)[-32:])}

for name, jwk in [("rsa_a", rsa_jwk("rsa_a.pem", "rsa-a")), ("rsa_b", rsa_jwk("rsa_b.pem", "rsa-b")),
                  ("ec_p256", ec_jwk("ec_p256.pem", "ec-1")), ("ed25519", ed_jwk("ed25519.pem", "ed-1"))]:
    with open(f"{name}.jwk.json", "w") as f:
        json.dump(jwk, f, indent=1)
        f.write("\n")
PY
