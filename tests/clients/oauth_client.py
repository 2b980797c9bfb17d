"""Gets a token with Authlib's OAuth 2.0 client and verifies it with Authlib's
JOSE implementation against the server's JWKS: a client library and a
verifier that share no code with the server.

usage: oauth_client.py TOKEN_URL JWKS_URL CLIENT_ID CLIENT_SECRET METHOD ISSUER AUDIENCE
METHOD is client_secret_basic or client_secret_post. Prints one JSON object:
the token response, the verified header and claims.
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt


def main():
    token_url, jwks_url, client_id, client_secret, method, issuer, audience = sys.argv[1:8]
    session = OAuth2Session(client_id, client_secret, token_endpoint_auth_method=method)
    token = session.fetch_token(token_url, grant_type="client_credentials", audience=audience)
    keys = JsonWebKey.import_key_set(requests.get(jwks_url, timeout=10).json())
    claims = jwt.decode(
        token["access_token"],
        keys,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": audience},
            "exp": {"essential": True},
        },
    )
    claims.validate()
    print(json.dumps({"response": dict(token), "header": dict(claims.header), "claims": dict(claims)}))


if __name__ == "__main__":
    main()
