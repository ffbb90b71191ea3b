
)'https://opentelemetry.io/schemas/1.26.0