"""Running an app under the lifecycle: ``lossless serve`` on uvicorn (ASGI) or gunicorn (WSGI)."""
