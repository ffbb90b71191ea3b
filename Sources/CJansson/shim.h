// jansson headers for ProxyJSON, with functions for the macros Swift cannot call.
#ifndef OTLP_AUTH_PROXY_CJANSSON_SHIM_H
#define OTLP_AUTH_PROXY_CJANSSON_SHIM_H
#include <jansson.h>

static inline int otlp_json_typeof(const json_t *json) { return json ? (int)json_typeof(json) : -1; }
static inline void otlp_json_decref(json_t *json) { json_decref(json); }
static inline json_t *otlp_json_incref(json_t *json) { return json_incref(json); }

/* The fixed-size char arrays of json_error_t import as tuples in Swift; these hand out
   NUL-terminated pointers into the caller's struct instead (valid while it lives). */
static inline const char *otlp_json_error_text(const json_error_t *error) { return error->text; }
static inline const char *otlp_json_error_source(const json_error_t *error) { return error->source; }

/* Type tags as plain ints so Swift does not depend on how the enum imports. */
static inline int otlp_json_type_object(void) { return JSON_OBJECT; }
static inline int otlp_json_type_array(void) { return JSON_ARRAY; }
static inline int otlp_json_type_string(void) { return JSON_STRING; }
static inline int otlp_json_type_integer(void) { return JSON_INTEGER; }
static inline int otlp_json_type_real(void) { return JSON_REAL; }
static inline int otlp_json_type_true(void) { return JSON_TRUE; }
static inline int otlp_json_type_false(void) { return JSON_FALSE; }
static inline int otlp_json_type_null(void) { return JSON_NULL; }
#endif
