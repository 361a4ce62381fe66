#!/bin/sh
set -e

# Apply migrations before starting (the web process only).
if [ "$1" = "lossless" ]; then
  python manage.py migrate --noinput
  python manage.py collectstatic --noinput
fi

"$@"
