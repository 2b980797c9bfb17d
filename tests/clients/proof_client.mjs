// oauth4webapi as a client that holds keys: private_key_jwt client
// authentication (RFC 7523) and DPoP-bound tokens (RFC 9449), at the token
// endpoint and at the JSON:API, and what a thief who copied the token can
// do with it.
//
// usage: node proof_client.mjs keygen OAUTH4WEBAPI_DIR KEY_FILE
//          makes an ES256 key, writes it (private, JWK) to KEY_FILE,
//          prints its public JWK
//        node proof_client.mjs run OAUTH4WEBAPI_DIR ISSUER CLIENT_ID AUTH AUDIENCE DPOP
//          AUTH is key:KEY_FILE (private_key_jwt) or secret:SECRET
//          (client_secret_post); DPOP is yes or no. Gets a token, reads
//          /api/v1/requirements with it, then tries the token as a thief
//          would. Prints one JSON object.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [command, moduleDir, ...args] = process.argv.slice(2);
const oauth = await import(pathToFileURL(join(moduleDir, 'build', 'index.js')).href);

if (command === 'keygen') {
  const { privateKey, publicKey } = await oauth.generateKeyPair('ES256', { extractable: true });
  const kid = 'oauth4webapi-1';
  const priv = { ...(await crypto.subtle.exportKey('jwk', privateKey)), kid };
  const pub = { ...(await crypto.subtle.exportKey('jwk', publicKey)), kid, alg: 'ES256', use: 'sig' };
  delete pub.key_ops;
  delete pub.ext;
  writeFileSync(args[0], JSON.stringify(priv));
  console.log(JSON.stringify(pub));
  process.exit(0);
}

const [issuerUrl, clientId, auth, audience, withDpop] = args;
const issuer = new URL(issuerUrl);
const options = { [oauth.allowInsecureRequests]: issuer.protocol === 'http:' };
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oauth2' }),
);
const client = { client_id: clientId };
let clientAuth;
if (auth.startsWith('key:')) {
  const jwk = JSON.parse(readFileSync(auth.slice(4), 'utf8'));
  const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  clientAuth = oauth.PrivateKeyJwt({ key, kid: jwk.kid });
} else {
  clientAuth = oauth.ClientSecretPost(auth.slice(7));
}
const dpop = withDpop === 'yes' ? oauth.DPoP(client, await oauth.generateKeyPair('ES256')) : undefined;
const response = await oauth.clientCredentialsGrantRequest(
  as,
  client,
  clientAuth,
  new URLSearchParams({ audience }),
  { ...options, DPoP: dpop },
);
const token = await oauth.processClientCredentialsResponse(as, client, response);
const url = new URL('/api/v1/requirements', issuer);
const accept = () => new Headers({ accept: 'application/vnd.api+json' });
const read = await oauth.protectedResourceRequest(token.access_token, 'GET', url, accept(), null, {
  ...options,
  DPoP: dpop,
});
const claims = JSON.parse(Buffer.from(token.access_token.split('.')[1], 'base64url').toString());
// A thief with the token and not the key: as Bearer, as DPoP without a
// proof, and with a proof of the thief's own key.
const status = async (authorization, extra = {}) =>
  (await fetch(url, { headers: { authorization, accept: 'application/vnd.api+json', ...extra } })).status;
const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
const stolen = await oauth
  .protectedResourceRequest(token.access_token, 'GET', url, accept(), null, { ...options, DPoP: thief })
  .then(
    (r) => r.status,
    // oauth4webapi throws on a challenge: the status is the error's.
    (e) => e.status ?? 'refused',
  );
console.log(
  JSON.stringify({
    token_type: token.token_type,
    claims,
    status: read.status,
    as_bearer: await status(`Bearer ${token.access_token}`),
    without_proof: await status(`DPoP ${token.access_token}`),
    other_key: stolen,
    challenge: (await fetch(url, { headers: { authorization: `Bearer ${token.access_token}` } })).headers.get(
      'www-authenticate',
    ),
  }),
);
