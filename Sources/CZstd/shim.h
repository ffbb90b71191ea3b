// libzstd headers for ProxyCompression, with plain-int wrappers for the enums Swift imports
// awkwardly, so the Swift side does not depend on how they import.
#ifndef OTLP_AUTH_PROXY_CZSTD_SHIM_H
#define OTLP_AUTH_PROXY_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>

/* Caps the window a frame may ask for (as a power of two); frames needing more are refused
   with ZSTD_error_frameParameter_windowTooLarge instead of allocating it. */
static inline size_t otlp_zstd_set_window_log_max(ZSTD_DCtx *dctx, int window_log) {
    return ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, window_log);
}

static inline int otlp_zstd_error_is_window_too_large(size_t code) {
    return ZSTD_isError(code) && ZSTD_getErrorCode(code) == ZSTD_error_frameParameter_windowTooLarge;
}
#endif
