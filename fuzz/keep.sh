#!/usr/bin/env bash
# Keep what a fuzz run found for TARGET...: the inputs of fuzz/out/TARGET/default/queue that
# gave new coverage (AFL names them "+cov"), up to 4 KiB each, become
# fuzz/corpus/TARGET/id-<sha1> unless the corpus already holds the same bytes. (afl-cmin
# would be smaller, but its trace of this persistent-mode harness comes back empty.)
set -euo pipefail
cd "$(dirname "$0")"
for t in "$@"; do
    known=$(sha1sum corpus/"$t"/* | cut -c1-40)
    n=0
    for f in out/"$t"/default/queue/*+cov*; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 4096 ] || continue
        h=$(sha1sum "$f" | cut -c1-40)
        grep -q "$h" <<<"$known" && continue
        cp "$f" "corpus/$t/id-${h:0:16}"
        known+=$'\n'$h
        n=$((n + 1))
    done
    echo "$t: $n inputs kept"
done
