#!/bin/sh
# Runs the command as the unprivileged user `conveyor`. A volume mounted at /data arrives
# owned by root, so while still root, hand it (and whatever an earlier image running as root
# left in it) to `conveyor` first; once it is theirs, later starts skip the walk.
set -eu
if [ "$(id -u)" = 0 ]; then
    if [ "$(stat -c %U /data)" != conveyor ]; then
        chown -R conveyor:conveyor /data
    fi
    exec setpriv --reuid=conveyor --regid=conveyor --init-groups -- "$@"
fi
exec "$@"
