#!/usr/bin/env bash
# Makes sure PostgreSQL, MariaDB and Redis answer on loopback; starts them if not.
# This machine kind starts them before a session; a new or rebooted one may not.
set -euo pipefail

up() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done; echo "$2 did not come up on :$1" >&2; return 1; }
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }; }

if ! up 5432; then
  echo "starting PostgreSQL"
  need_pkg postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for 5432 PostgreSQL
fi
if ! up 3306; then
  echo "starting MariaDB"
  need_pkg mariadb-server
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for 3306 MariaDB
fi
if ! up 6379; then
  echo "starting Redis"
  need_pkg redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi
echo "PostgreSQL :5432, MariaDB :3306, Redis :6379 are up"
