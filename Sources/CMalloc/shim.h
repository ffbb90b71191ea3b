// glibc's allocator controls (malloc_trim) for ProxyCore's HeapReturn. Part of libc: nothing to link.
#ifndef OTLP_AUTH_PROXY_CMALLOC_SHIM_H
#define OTLP_AUTH_PROXY_CMALLOC_SHIM_H
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif
#endif
