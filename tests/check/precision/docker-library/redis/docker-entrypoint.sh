#!/bin/sh
# The control flow of docker-library/redis docker-entrypoint.sh (7.2/debian): re-exec as the
# redis user, then `exec "$@"`.
set -e

# first arg is `-f` or `--some-option` or `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "$1" = 'redis-server' -a "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi

um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
