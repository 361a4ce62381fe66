#!/usr/bin/env bash
# The control flow of docker-library/postgres docker-entrypoint.sh (17/bookworm): every helper
# is a function, `_main` ends in `exec "$@"`, and the script calls `_main "$@"` unless it is
# sourced. Function bodies other than _main's last line are reduced to their calls.
set -Eeo pipefail

docker_setup_env() {
	declare -g DATABASE_ALREADY_EXISTS
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS='true'
	fi
}

# check to see if this file is being run or sourced from another script
_is_sourced() {
	# https://unix.stackexchange.com/a/215279
	[ "${#FUNCNAME[@]}" -ge 2 ] \
		&& [ "${FUNCNAME[0]}" = '_is_sourced' ] \
		&& [ "${FUNCNAME[1]}" = 'source' ]
}

_main() {
	# if first arg looks like a flag, assume we want to run postgres server
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi

	if [ "$1" = 'postgres' ] && ! _pg_want_help "$@"; then
		docker_setup_env
		# only run initialization on an empty data directory
		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			docker_init_database_dir
			docker_temp_server_start "$@"
			docker_setup_db
			docker_temp_server_stop
		fi
	fi

	exec "$@"
}

if ! _is_sourced; then
	_main "$@"
fi
