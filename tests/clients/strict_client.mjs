// Gets a token with oauth4webapi, a deliberately strict OAuth 2.0 client, and
// validates it as an RFC 9068 JWT access token the way a resource server
// built on oauth4webapi would: discovery (RFC 8414), client credentials
// (RFC 6749 section 4.4) and validateJwtAccessToken (RFC 9068).
//
// usage: node strict_client.mjs OAUTH4WEBAPI_DIR ISSUER CLIENT_ID CLIENT_SECRET AUDIENCE
// Prints one JSON object: the token response and the validated claims.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [moduleDir, issuerUrl, clientId, clientSecret, audience] = process.argv.slice(2);
const oauth = await import(pathToFileURL(join(moduleDir, 'build', 'index.js')).href);

const issuer = new URL(issuerUrl);
// Loopback tests speak plain HTTP unless they set up TLS.
const options = { [oauth.allowInsecureRequests]: issuer.protocol === 'http:' };
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oauth2' }),
);
const client = { client_id: clientId };
const response = await oauth.clientCredentialsGrantRequest(
  as,
  client,
  oauth.ClientSecretPost(clientSecret),
  new URLSearchParams({ audience }),
  options,
);
const token = await oauth.processClientCredentialsResponse(as, client, response);
const request = new Request(new URL('/api/v1/requirements', issuer), {
  headers: { authorization: `Bearer ${token.access_token}` },
});
const claims = await oauth.validateJwtAccessToken(as, request, audience, options);
console.log(JSON.stringify({ token, claims }));
