// Module ProxyTLS.
