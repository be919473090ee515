#!/usr/bin/env bash
# Builds PicGate's runtime dependencies as an AWS Lambda layer for python3.13 on x86_64:
#   .build/layer/python/...        pip --target with manylinux (glibc <= 2.34) x86_64 wheels only
#   .build/picgate-deps-layer.zip  the layer zip
# then checks it: infra/layer_check.py imports handler.py with the runtime's Python from the
# layer's packages alone (no other site-packages) and answers function-URL events with it.
# With `--publish STAGE` it also publishes the layer and stores its ARN in SSM as
# /picgate/STAGE/DEPS_LAYER_ARN, where serverless.yml reads it (needs the AWS CLI). Lambda takes
# a zip of up to 50 MB uploaded directly and 250 MB unzipped for a function and all its layers;
# the zip (~47 MB) is just under the first, so LAYER_BUCKET (an S3 bucket in the same region) is
# optional: set it to upload through S3 instead, which has room to grow.
#
# The list is uv.lock's runtime dependencies without uvicorn: Lambda runs the app through Mangum,
# and leaving uvicorn[standard] out keeps uvloop, watchfiles, PyYAML and click out of the layer
# and out of the cold start. Turso needs nothing more: PicGate speaks its HTTP protocol itself.
#
# x86_64 to match serverless.yml (arm64 would work too: no dependency is x86-only); Lambda
# python3.13 runs on Amazon Linux 2023 (glibc 2.34), hence manylinux wheels up to 2_34, each tag
# named (pip does not expand a --platform to the older ones). The bytecode must come from the
# runtime's own Python (a .pyc is per Python version): RUNTIME_PYTHON, else the python3.13 uv
# finds, else the one `uv python install 3.13` downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || command -v python3 )}
UV=${UV:-$( [ -x .venv/bin/uv ] && echo "$PWD/.venv/bin/uv" || command -v uv || true )}
if [ -z "$UV" ]; then
  echo "needs uv: run scripts/test.sh once, or pip install 'uv>=0.13,<0.15'" >&2
  exit 1
fi
RUNTIME_VERSION=3.13 # serverless.yml's provider.runtime; tests/unit/test_lambda_layer.py checks
GLIBC_MINOR=34       # Amazon Linux 2023
RUNTIME_PYTHON=${RUNTIME_PYTHON:-$("$UV" python find --no-project "$RUNTIME_VERSION" 2>/dev/null || true)}
if [ -z "$RUNTIME_PYTHON" ]; then
  "$UV" python install --quiet "$RUNTIME_VERSION" >&2 || true
  RUNTIME_PYTHON=$("$UV" python find --no-project "$RUNTIME_VERSION" 2>/dev/null || true)
fi
if [ -z "$RUNTIME_PYTHON" ]; then
  echo "needs Python $RUNTIME_VERSION (Lambda's runtime) to compile the layer: set RUNTIME_PYTHON or run \`uv python install $RUNTIME_VERSION\`" >&2
  exit 1
fi
PLATFORMS=()
for minor in $(seq "$GLIBC_MINOR" -1 5); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
OUT=.build
rm -rf "$OUT/layer" "$OUT/picgate-deps-layer.zip"
mkdir -p "$OUT/layer/python"

# the versions of uv.lock, the one lock file (Dockerfile and scripts/test.sh use it too)
"$UV" export --quiet --frozen --no-dev --no-emit-project --prune uvicorn \
  -o "$OUT/requirements-lambda.txt"

"$PYTHON" -m pip install --quiet --disable-pip-version-check "${PLATFORMS[@]}" \
  --implementation cp --python-version "$RUNTIME_VERSION" \
  --no-compile --only-binary=:all: --target "$OUT/layer/python" -r "$OUT/requirements-lambda.txt"

# bytecode compiled now: Lambda's /opt is read-only, so nothing could be cached at run time
"$RUNTIME_PYTHON" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$OUT/layer/python" \
  >/dev/null || true
(cd "$OUT/layer" && "$PYTHON" -c '
import os, zipfile
with zipfile.ZipFile("../picgate-deps-layer.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for root, _, files in os.walk("python"):
        for name in files:
            z.write(os.path.join(root, name))
')
echo "layer: $OUT/picgate-deps-layer.zip, $(($(stat -c %s "$OUT/picgate-deps-layer.zip") / 1048576)) MB" \
  "zipped (50 MB for a direct upload), $(($(du -sb "$OUT/layer" | cut -f1) / 1048576)) MB" \
  "unzipped (250 MB for the function and its layers together)"

# the runtime's Python, the layer's packages and PicGate's code, nothing else: as Lambda runs it
"$RUNTIME_PYTHON" -S infra/layer_check.py "$OUT/layer/python"

if [ "${1:-}" = "--publish" ]; then
  STAGE=${2:?usage: $0 --publish STAGE}
  # direct uploads stop at 50 MB zipped and the layer is a little under (~47 MB): S3 when given one
  if [ -n "${LAYER_BUCKET:-}" ]; then
    aws s3 cp --quiet "$OUT/picgate-deps-layer.zip" "s3://$LAYER_BUCKET/picgate/$STAGE-deps.zip"
    CONTENT=(--content "S3Bucket=$LAYER_BUCKET,S3Key=picgate/$STAGE-deps.zip")
  else
    CONTENT=(--zip-file "fileb://$OUT/picgate-deps-layer.zip")
  fi
  ARN=$(aws lambda publish-layer-version --layer-name "picgate-$STAGE-deps" "${CONTENT[@]}" \
    --compatible-runtimes "python$RUNTIME_VERSION" --compatible-architectures x86_64 \
    --query LayerVersionArn --output text)
  aws ssm put-parameter --name "/picgate/$STAGE/DEPS_LAYER_ARN" --type String \
    --value "$ARN" --overwrite >/dev/null
  echo "published $ARN (stored in /picgate/$STAGE/DEPS_LAYER_ARN)"
fi
