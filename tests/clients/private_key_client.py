"""Authlib's private_key_jwt client authentication (RFC 7523, OpenID
Connect Core section 9): the client holds an RSA key and the server only
its public half.

usage: private_key_client.py keygen KEY_FILE
         makes a key, writes it (private) to KEY_FILE, prints its public JWK
       private_key_client.py token TOKEN_URL CLIENT_ID KEY_FILE
         the client credentials grant, authenticated with an assertion
         signed by the key (5 minutes of life: Authlib's default hour is
         longer than the server takes); prints the token response
"""
import json
import sys
import time

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import RSAKey


def main():
    command = sys.argv[1]
    if command == "keygen":
        key = RSAKey.generate_key(2048, parameters={"kid": "authlib-1", "alg": "RS256", "use": "sig"})
        with open(sys.argv[2], "w") as f:
            json.dump(key.as_dict(private=True), f)
        print(json.dumps(key.as_dict(private=False)))
        return
    token_url, client_id, key_file = sys.argv[2:5]
    with open(key_file) as f:
        key = json.load(f)
    auth = PrivateKeyJWT(
        token_url,
        claims={"exp": int(time.time()) + 300},
        headers={"kid": key["kid"]},
        alg="RS256",
    )
    session = OAuth2Session(client_id, key, token_endpoint_auth_method=auth)
    token = session.fetch_token(token_url, grant_type="client_credentials")
    print(json.dumps(dict(token)))


if __name__ == "__main__":
    main()
