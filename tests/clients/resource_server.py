"""A resource server that protects its API with Authlib's
IntrospectTokenValidator: every request's bearer token is introspected at
the operator (RFC 7662), the server authenticating as a credential with
client_secret_basic. It shares no code with the operator.

usage: resource_server.py INTROSPECTION_URL CLIENT_ID CLIENT_SECRET PORT
Serves GET /requirements (needs requirement:read) on 127.0.0.1:PORT and
answers with what the introspection said of the token.
"""
import sys

import requests
from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from authlib.oauth2.rfc7662 import IntrospectTokenValidator
from flask import Flask, jsonify

URL, CLIENT_ID, CLIENT_SECRET, PORT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class OperatorIntrospection(IntrospectTokenValidator):
    def introspect_token(self, token_string):
        response = requests.post(
            URL,
            data={"token": token_string, "token_type_hint": "access_token"},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


require_oauth = ResourceProtector()
require_oauth.register_token_validator(OperatorIntrospection())
app = Flask(__name__)


@app.route("/requirements")
@require_oauth("requirement:read")
def requirements():
    token = current_token
    return jsonify(client_id=token["client_id"], org=token["org"], scope=token["scope"])


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT)
