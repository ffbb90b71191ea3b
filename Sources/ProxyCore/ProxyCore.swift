// Module ProxyCore.
