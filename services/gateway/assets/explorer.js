// The API explorer at /docs: Swagger UI on the gateway's own OpenAPI document. Every
// URL is relative to the page, so the explorer works behind a path prefix too.
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  // The document's `operationId`s are the RPCs' full names: show them.
  displayOperationId: true,
  // Nothing leaves for a validator service on the internet.
  validatorUrl: null,
});
