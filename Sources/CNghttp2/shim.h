// libnghttp2 headers for ProxyHTTP2.
#ifndef OTLP_AUTH_PROXY_CNGHTTP2_SHIM_H
#define OTLP_AUTH_PROXY_CNGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>
#endif
