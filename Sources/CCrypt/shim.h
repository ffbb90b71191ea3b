// libxcrypt for ProxyAuth (htpasswd verification).
#ifndef OTLP_AUTH_PROXY_CCRYPT_SHIM_H
#define OTLP_AUTH_PROXY_CCRYPT_SHIM_H
#include <crypt.h>
#endif
