#!/usr/bin/env python3
"""Makes the JWT and JWKS seed corpora and the fixed key set the fuzz-jwt target verifies with.

Run once with the end-to-end venv (it has cryptography and PyJWT):
    .venv/bin/python fuzz/seeds/make_jwt_seeds.py
It writes fuzz/corpus/jwt/*, fuzz/corpus/jwks/* and fuzz/Sources/fuzz-jwt/FixedKeys.swift with
fresh keys. The private keys are thrown away: only public keys and signed tokens are kept.
"""
import base64
import hashlib
import json
import os
import pathlib

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

FUZZ = pathlib.Path(__file__).resolve().parent.parent
ISSUER = "https://issuer.fuzz.test"
HMAC_ISSUER = "https://hmac.fuzz.test"
AUDIENCE = "otlp"
# Deliberately public: a test secret for the fuzz target, never used anywhere else.
HMAC_SECRET = b"fuzz-target-hmac-secret-0123456789abcdef"
IAT = 1_749_999_000
EXP = 4_102_444_800


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_keys = {
    "P-256": ec.generate_private_key(ec.SECP256R1()),
    "P-384": ec.generate_private_key(ec.SECP384R1()),
    "P-521": ec.generate_private_key(ec.SECP521R1()),
}
ed_key = ed25519.Ed25519PrivateKey.generate()

rsa_numbers = rsa_key.public_key().public_numbers()
jwks = {"keys": [{"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(int_bytes(rsa_numbers.n)),
                  "e": b64(int_bytes(rsa_numbers.e))}]}
ec_size = {"P-256": 32, "P-384": 48, "P-521": 66}
for curve, key in ec_keys.items():
    numbers = key.public_key().public_numbers()
    size = ec_size[curve]
    jwks["keys"].append({"kty": "EC", "kid": "ec-" + curve, "crv": curve, "alg": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[curve],
                         "x": b64(numbers.x.to_bytes(size, "big")), "y": b64(numbers.y.to_bytes(size, "big"))})
from cryptography.hazmat.primitives import serialization
ed_raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
jwks["keys"].append({"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(ed_raw)})
jwks_text = json.dumps(jwks, separators=(",", ":"))

claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "fuzz-workload", "tenant": "team-a", "team": "blue",
          "iat": IAT, "exp": EXP}
signers = {
    "RS256": (rsa_key, "rsa-1"), "RS384": (rsa_key, "rsa-1"), "RS512": (rsa_key, "rsa-1"),
    "PS256": (rsa_key, "rsa-1"), "PS384": (rsa_key, "rsa-1"), "PS512": (rsa_key, "rsa-1"),
    "ES256": (ec_keys["P-256"], "ec-P-256"), "ES384": (ec_keys["P-384"], "ec-P-384"),
    "ES512": (ec_keys["P-521"], "ec-P-521"), "EdDSA": (ed_key, "ed-1"),
}

jwt_dir = FUZZ / "corpus" / "jwt"
jwks_dir = FUZZ / "corpus" / "jwks"
for directory in (jwt_dir, jwks_dir):
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()


def save(directory: pathlib.Path, name: str, data) -> None:
    (directory / name).write_bytes(data.encode() if isinstance(data, str) else data)


def raw_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


for alg, (key, kid) in signers.items():
    save(jwt_dir, f"valid-{alg}", jwt.encode(claims, key, algorithm=alg, headers={"kid": kid}))
for alg in ("HS256", "HS384", "HS512"):
    save(jwt_dir, f"valid-{alg}", jwt.encode(dict(claims, iss=HMAC_ISSUER), HMAC_SECRET, algorithm=alg))

es256 = lambda c, h=None: jwt.encode(c, ec_keys["P-256"], algorithm="ES256", headers=h or {"kid": "ec-P-256"})
save(jwt_dir, "expired", es256(dict(claims, exp=IAT + 10)))
save(jwt_dir, "not-yet-valid", es256(dict(claims, nbf=EXP - 10)))
save(jwt_dir, "aud-array", es256(dict(claims, aud=["other", AUDIENCE])))
save(jwt_dir, "wrong-aud", es256(dict(claims, aud="elsewhere")))
save(jwt_dir, "wrong-iss", es256(dict(claims, iss="https://evil.test")))
save(jwt_dir, "no-exp", es256({k: v for k, v in claims.items() if k != "exp"}))
save(jwt_dir, "unknown-kid", es256(claims, {"kid": "rotated-away"}))
save(jwt_dir, "no-kid", es256(claims, {}))
save(jwt_dir, "crit", es256(claims, {"kid": "ec-P-256", "crit": ["exp"]}))
save(jwt_dir, "jku", es256(claims, {"kid": "ec-P-256", "jku": "https://evil.test/jwks"}))
save(jwt_dir, "alg-none", raw_token({"alg": "none"}, claims))
save(jwt_dir, "alg-None", raw_token({"alg": "None", "kid": "ec-P-256"}, claims))
save(jwt_dir, "hs256-with-rsa-key", jwt.encode(claims, HMAC_SECRET, algorithm="HS256", headers={"kid": "rsa-1"}))
valid = jwt.encode(claims, ec_keys["P-256"], algorithm="ES256", headers={"kid": "ec-P-256"})
head, payload, sig = valid.split(".")
save(jwt_dir, "tampered-signature", f"{head}.{payload}.{sig[:-2]}AA")
save(jwt_dir, "empty-signature", f"{head}.{payload}.")
save(jwt_dir, "padded-base64", f"{head}=.{payload}.{sig}")
dup = '{"alg":"ES256","kid":"ec-P-256","alg":"none"}'
save(jwt_dir, "duplicate-member", f"{b64(dup.encode())}.{payload}.{sig}")
save(jwt_dir, "json-serialization", json.dumps({"payload": payload, "signatures": [{"protected": head, "signature": sig}]}))
save(jwt_dir, "jwe-five-parts", f"{b64(json.dumps({'alg': 'RSA-OAEP', 'enc': 'A256GCM'}).encode())}.AAAA.AAAA.AAAA.AAAA")
save(jwt_dir, "tenant-not-string", es256(dict(claims, tenant=42)))
save(jwt_dir, "deep-claims", es256(dict(claims, nest=[[[[[[[[{"a": [1.5e308, -0.0, None, True]}]]]]]]]])))
save(jwt_dir, "unicode-claims", es256(dict(claims, sub="\u00e9\u4e2d\U0001f600", team="\u0000x")))

save(jwks_dir, "full", jwks_text)
for key in jwks["keys"]:
    save(jwks_dir, f"single-{key['kid']}", json.dumps({"keys": [key]}))
save(jwks_dir, "empty", '{"keys":[]}')
save(jwks_dir, "unknown-kty", json.dumps({"keys": [{"kty": "oct", "k": b64(HMAC_SECRET), "kid": "sym"}, jwks["keys"][1]]}))
save(jwks_dir, "duplicate-kid", json.dumps({"keys": [jwks["keys"][1], jwks["keys"][1]]}))
save(jwks_dir, "small-rsa", json.dumps({"keys": [{"kty": "RSA", "kid": "small", "n": b64(int_bytes(rsa_numbers.n)[:64]), "e": "AQAB"}]}))
save(jwks_dir, "off-curve", json.dumps({"keys": [dict(jwks["keys"][1], y=jwks["keys"][1]["x"])]}))
save(jwks_dir, "x5c", json.dumps({"keys": [dict(jwks["keys"][0], x5c=["MIIB"], use="enc", key_ops=["verify"])]}))
save(jwks_dir, "duplicate-member", '{"keys":[],"keys":[]}')

fixed = FUZZ / "Sources" / "fuzz-jwt" / "FixedKeys.swift"
fixed.write_text(
    "// Generated by fuzz/seeds/make_jwt_seeds.py with the tokens in fuzz/corpus/jwt; regenerate both together.\n"
    "// Public keys only (the private keys were discarded) and a test-only HMAC secret.\n"
    "enum FixedKeys {\n"
    f"    static let issuer = {json.dumps(ISSUER)}\n"
    f"    static let hmacIssuer = {json.dumps(HMAC_ISSUER)}\n"
    f"    static let audience = {json.dumps(AUDIENCE)}\n"
    f"    static let hmacSecret = Array({json.dumps(HMAC_SECRET.decode())}.utf8)\n"
    f"    static let jwks = #\"{jwks_text}\"#\n"
    "}\n")
print("wrote", len(list(jwt_dir.iterdir())), "JWT seeds and", len(list(jwks_dir.iterdir())), "JWKS seeds")
