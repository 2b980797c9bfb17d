// Starts Swagger UI on this server's OpenAPI document. The explorer gets
// tokens from the token endpoint of the server that serves it and calls
// the API there, whatever name the browser reached it by (a port-forward,
// a Service, an Ingress): the document's token URL is the one written into
// credentials' Secrets, which a browser may not reach.
"use strict";

(async () => {
  const root = document.getElementById("swagger-ui");
  let spec;
  try {
    const response = await fetch("/api/v1/open_api", { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    spec = await response.json();
  } catch (e) {
    root.textContent = `The API description could not be loaded: ${e.message}`;
    return;
  }
  spec.servers = [{ url: window.location.origin }];
  const flow = spec.components?.securitySchemes?.oauth2?.flows?.clientCredentials;
  if (flow) flow.tokenUrl = new URL("/oauth/token", window.location.href).href;
  window.ui = SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayRequestDuration: true,
    // No badge: it would send the document to validator.swagger.io.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
