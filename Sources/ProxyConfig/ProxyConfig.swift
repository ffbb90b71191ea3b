// Module ProxyConfig.
