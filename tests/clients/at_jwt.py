"""Gets a token with the client credentials grant and validates it as an
RFC 9068 JWT access token with joserfc, a JOSE implementation that shares
no code with the server: the signature against the JWKS, the `at+jwt` type
and every claim RFC 9068 section 2.2 requires.

usage: at_jwt.py TOKEN_URL JWKS_URL CLIENT_ID CLIENT_SECRET ISSUER AUDIENCE
Prints one JSON object: the verified header and claims.
"""
import json
import sys

import requests
from joserfc import jwt
from joserfc.jwk import KeySet


def main():
    token_url, jwks_url, client_id, client_secret, issuer, audience = sys.argv[1:7]
    response = requests.post(
        token_url,
        data={"grant_type": "client_credentials", "audience": audience},
        auth=(client_id, client_secret),
        timeout=10,
    )
    response.raise_for_status()
    access_token = response.json()["access_token"]
    keys = KeySet.import_key_set(requests.get(jwks_url, timeout=10).json())
    token = jwt.decode(access_token, keys, algorithms=["RS256", "ES256"])
    # RFC 9068 section 4: resource servers MUST check the type.
    if token.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        raise SystemExit(f"typ is {token.header.get('typ')!r}, not at+jwt")
    essential = {"essential": True}
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp=essential,
        iat=essential,
        sub=essential,
        jti=essential,
        client_id=essential,
    ).validate(token.claims)
    print(json.dumps({"header": token.header, "claims": token.claims}))


if __name__ == "__main__":
    main()
