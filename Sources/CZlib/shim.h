// zlib headers for ProxyCompression, with functions for the macros Swift cannot call.
#ifndef OTLP_AUTH_PROXY_CZLIB_SHIM_H
#define OTLP_AUTH_PROXY_CZLIB_SHIM_H
#include <zlib.h>

/* inflateInit2 is a macro around inflateInit2_ that passes the header's version and the size
   of z_stream, so the library can check that caller and library agree on the struct layout. */
static inline int otlp_inflate_init2(z_streamp stream, int window_bits) {
    return inflateInit2(stream, window_bits);
}
#endif
