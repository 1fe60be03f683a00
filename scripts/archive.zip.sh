#!/usr/bin/env bash
# Archive a shale store into archive-<UTC timestamp>.zip: scripts/archive.tar.sh with zip instead of tar.gz
# (same environment: SHALE_URL, DATA_DIR, ARCHIVE_DIR, SHALE_BIN, BACKUP_STAGING). Needs `zip`; when it is
# missing and this runs as root on Debian/Ubuntu, it is installed with apt-get.
set -euo pipefail
SHALE_ARCHIVE_FORMAT=zip exec "$(dirname "${BASH_SOURCE[0]}")/archive.tar.sh" "$@"
