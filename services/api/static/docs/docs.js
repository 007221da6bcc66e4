// Starts Swagger UI on the page's #swagger-ui element with the document it names.
// A file of its own, not an inline script, so /docs can forbid inline scripts in its CSP.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // no request to swagger.io: everything stays on this origin
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
