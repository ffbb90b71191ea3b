// OpenSSL 3 headers for ProxyTLS, plus static inline wrappers for the macros Swift cannot call.
#ifndef OTLP_AUTH_PROXY_COPENSSL_SHIM_H
#define OTLP_AUTH_PROXY_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

static inline long otlp_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long otlp_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long otlp_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) {
    return SSL_CTX_set1_groups_list(ctx, list);
}
static inline long otlp_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long otlp_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline long otlp_SSL_CTX_add0_chain_cert(SSL_CTX *ctx, X509 *x509) {
    return SSL_CTX_add0_chain_cert(ctx, x509);
}

// SSL_OP_* are SSL_OP_BIT(n) shifts, which Swift does not import; return them as plain values.
static inline uint64_t otlp_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t otlp_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t otlp_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }

// JWS signature verification (ProxyTLS/JWSKey.swift): keys built from JWK fields with OSSL_PARAM_BLD,
// RSA-PSS parameters, ECDSA signature conversion and one-shot HMAC.
#include <openssl/param_build.h>
#include <openssl/core_names.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>

// EVP_PKEY_PUBLIC_KEY is an OR of OSSL_KEYMGMT_SELECT_* macros; return it as a plain value.
static inline int otlp_EVP_PKEY_PUBLIC_KEY(void) { return EVP_PKEY_PUBLIC_KEY; }

// TLS client (JWKS fetches): SNI is an SSL_ctrl macro.
static inline long otlp_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline uint64_t otlp_SSL_OP_NO_TICKET(void) { return SSL_OP_NO_TICKET; }

// Client certificate chains kept past the handshake (ProxyTLS/PeerChain.swift): sk_X509_pop_free
// is a macro, and the cast of X509_free to the stack's free function type is C's to make.
static inline void otlp_sk_X509_pop_free(STACK_OF(X509) *stack) {
    sk_X509_pop_free(stack, X509_free);
}

#endif
