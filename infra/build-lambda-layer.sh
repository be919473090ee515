#!/usr/bin/env bash
# Builds PicGate's runtime dependencies as an AWS Lambda layer for python3.11 on x86_64:
#   .build/layer/python/...        pip --target with manylinux (glibc <= 2.26) x86_64 wheels only
#   .build/picgate-deps-layer.zip  the layer zip
# With `--publish STAGE` it also publishes the layer and stores its ARN in SSM as
# /picgate/STAGE/DEPS_LAYER_ARN, where serverless.yml reads it (needs the AWS CLI). Lambda takes
# a zip of up to 50 MB uploaded directly and 250 MB unzipped for a function and all its layers;
# the zip (~48 MB) is just under the first, so LAYER_BUCKET (an S3 bucket in the same region) is
# optional: set it to upload through S3 instead, which has room to grow.
#
# The list is uv.lock's runtime dependencies without uvicorn: Lambda runs the app through Mangum,
# and leaving uvicorn[standard] out keeps uvloop, watchfiles, PyYAML and click out of the layer
# and out of the cold start. Turso needs nothing more: PicGate speaks its HTTP protocol itself.
#
# x86_64 to match serverless.yml (arm64 would work too: no dependency is x86-only); Lambda
# python3.11 runs on Amazon Linux 2 (glibc 2.26), hence manylinux wheels up to 2_26, each tag
# named (pip does not expand a --platform to the older ones; the locked argon2-cffi-bindings
# ships manylinux_2_26 only, most others manylinux2014).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || command -v python3 )}
UV=${UV:-$( [ -x .venv/bin/uv ] && echo "$PWD/.venv/bin/uv" || command -v uv || true )}
if [ -z "$UV" ]; then
  echo "needs uv: run scripts/test.sh once, or pip install 'uv>=0.13,<0.15'" >&2
  exit 1
fi
OUT=.build
rm -rf "$OUT/layer" "$OUT/picgate-deps-layer.zip"
mkdir -p "$OUT/layer/python"

# the versions of uv.lock, the one lock file (Dockerfile and scripts/test.sh use it too)
"$UV" export --quiet --frozen --no-dev --no-emit-project --prune uvicorn \
  -o "$OUT/requirements-lambda.txt"

"$PYTHON" -m pip install --quiet --disable-pip-version-check \
  --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --implementation cp --python-version 3.11 \
  --only-binary=:all: --target "$OUT/layer/python" -r "$OUT/requirements-lambda.txt"

# bytecode compiled now: Lambda's /opt is read-only, so nothing could be cached at run time
"$PYTHON" -m compileall -q -j 0 "$OUT/layer/python" >/dev/null || true
(cd "$OUT/layer" && "$PYTHON" -c '
import os, zipfile
with zipfile.ZipFile("../picgate-deps-layer.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for root, _, files in os.walk("python"):
        for name in files:
            z.write(os.path.join(root, name))
')
echo "layer: $OUT/picgate-deps-layer.zip ($(du -h "$OUT/picgate-deps-layer.zip" | cut -f1) zipped," \
  "$(du -sh "$OUT/layer" | cut -f1) unzipped; Lambda allows 250 MB unzipped in all)"

if [ "${1:-}" = "--publish" ]; then
  STAGE=${2:?usage: $0 --publish STAGE}
  # direct uploads stop at 50 MB zipped and the layer is a little under: S3 when given one
  if [ -n "${LAYER_BUCKET:-}" ]; then
    aws s3 cp --quiet "$OUT/picgate-deps-layer.zip" "s3://$LAYER_BUCKET/picgate/$STAGE-deps.zip"
    CONTENT=(--content "S3Bucket=$LAYER_BUCKET,S3Key=picgate/$STAGE-deps.zip")
  else
    CONTENT=(--zip-file "fileb://$OUT/picgate-deps-layer.zip")
  fi
  ARN=$(aws lambda publish-layer-version --layer-name "picgate-$STAGE-deps" "${CONTENT[@]}" \
    --compatible-runtimes python3.11 --compatible-architectures x86_64 \
    --query LayerVersionArn --output text)
  aws ssm put-parameter --name "/picgate/$STAGE/DEPS_LAYER_ARN" --type String \
    --value "$ARN" --overwrite >/dev/null
  echo "published $ARN (stored in /picgate/$STAGE/DEPS_LAYER_ARN)"
fi
