"""A real HAProxy: configuration (config), access log format (log) and process control (process). Offline analysis imports only ``log``."""
