// Module ProxySink.
