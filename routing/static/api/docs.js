// Renders the gateway's OpenAPI document with the locally served Swagger UI (no CDN).
(function () {
  var url = document.currentScript.getAttribute("data-schema-url");
  window.ui = SwaggerUIBundle({ url: url, dom_id: "#swagger-ui", deepLinking: true });
})();
