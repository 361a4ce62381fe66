"""Analysis of a recorded run: the core analysis and the proxy-log join."""
