#!/usr/bin/env bash
# Installs what the tests need, idempotently, from Debian's packages and PyPI only: Chromium and
# its driver, and selenium + pytest for Python (the browser tests); PostgreSQL's server binaries
# (the tests of the PostgreSQL history start throwaway servers of their own) and nginx (the
# cluster tests put it in front of several hubs as the load balancer).
set -euo pipefail

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import selenium, pytest" >/dev/null 2>&1; then
    echo "installing selenium and pytest"
    python3 -m pip install -q --disable-pip-version-check selenium pytest
fi
echo "browser test tools: $(chromium --version 2>/dev/null), selenium $(python3 -c 'import selenium; print(selenium.__version__)')"
