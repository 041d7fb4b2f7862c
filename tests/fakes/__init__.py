"""Local stand-ins for outside services in tests (translation APIs, webhook receivers): real sockets on loopback."""
