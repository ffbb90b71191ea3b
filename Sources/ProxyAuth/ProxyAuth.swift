// Module ProxyAuth.
