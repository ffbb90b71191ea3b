// jansson headers for ProxyJSON, with functions for the macros Swift cannot call.
#ifndef OTLP_AUTH_PROXY_CJANSSON_SHIM_H
#define OTLP_AUTH_PROXY_CJANSSON_SHIM_H
#include <jansson.h>

static inline int otlp_json_typeof(const json_t *json) { return json ? (int)json_typeof(json) : -1; }
static inline void otlp_json_decref(json_t *json) { json_decref(json); }
static inline json_t *otlp_json_incref(json_t *json) { return json_incref(json); }
#endif
