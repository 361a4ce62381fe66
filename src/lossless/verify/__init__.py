"""``lossless verify``: a real rolling upgrade under open-loop HTTP load, every request recorded and
every failure explained. See docs/verify.md."""
