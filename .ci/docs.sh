#!/usr/bin/env bash
# Checks that the docs a newcomer reads point only inside the repository, and that no committed
# file names a path of the machine it was made on (issue 9 item 11). Exit 1 with every finding.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
fail=0

# 1. Every relative link in the README, ARCHITECTURE, DEVELOPERS and docs/ resolves to a tracked
#    path inside the repository.
while IFS= read -r md; do
  dir=$(dirname "$md")
  while IFS= read -r link; do
    target=${link%%#*}
    [ -z "$target" ] && continue
    case "$target" in http://* | https://* | mailto:*) continue ;; esac
    resolved=$(realpath -m "$dir/$target")
    case "$resolved" in
      "$root"/*) [ -e "$resolved" ] || { echo "$md: link to $target: no such file"; fail=1; } ;;
      *) echo "$md: link to $target leaves the repository"; fail=1 ;;
    esac
  done < <(grep -o '](\([^)]*\))' "$md" | sed 's/^](//; s/)$//')
done < <(git ls-files 'README.md' 'ARCHITECTURE.md' 'DEVELOPERS.md' 'docs/*.md' '*/README.md')

# 2. No tracked text file names this checkout's absolute path or a home directory.
if git grep -n -I -F -e "$root/" -- . ':!Cargo.lock'; then
  echo "^ files naming this checkout's absolute path ($root): write repository-relative paths"
  fail=1
fi
if git grep -n -I -E -e '(^|[^.A-Za-z0-9_])/(home/[a-z_][a-z0-9_-]*|root)/[A-Za-z0-9_.-]+' -- \
     '*.md' 'bench/results/*' 'docs/*' ; then
  echo "^ docs or reports naming a home directory: write repository-relative paths"
  fail=1
fi
[ "$fail" = 0 ] && echo "docs: links resolve inside the repository; no machine paths"
exit "$fail"
