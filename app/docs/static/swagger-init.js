window.addEventListener("load", function () {
  var node = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: node.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: true,
    // Swagger UI would otherwise send the spec's URL to validator.swagger.io for a badge:
    // these machines have no internet, and the spec is nobody else's business.
    validatorUrl: null,
  });
});
