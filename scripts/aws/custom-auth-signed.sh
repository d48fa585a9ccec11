#!/usr/bin/env bash
# Creates what samples/custom-auth-signed needs in your AWS account: a token-signing key pair
# (local files), an execution role, scripts/example_authorizer.py as the Lambda function
# example-authorizer, the authorizer example-signed-authorizer (token key name "token", the
# public key as key1), and the permission for AWS IoT to call the function. Prints the sample's
# run line. Run it twice and it creates nothing twice. Undo: teardown.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: scripts/aws/custom-auth-signed.sh --region REGION --yes [--out-dir DIR] [--endpoint-url URL]

Makes DIR/signing-key.pem (mode 0600) and DIR/signing-key.pub.pem, deploys
scripts/example_authorizer.py as the Lambda function $FUNCTION (role $ROLE) and creates the
authorizer $SIGNED_AUTHORIZER with token key name $TOKEN_KEY_NAME and the public key.
EOF
  usage_common
}

parse_args "$@"
command -v openssl >/dev/null || die "openssl is needed to make the token-signing key pair"

account="$(account_id)"
endpoint="$(data_endpoint)"

private_key="$OUT_DIR/signing-key.pem"
public_key="$OUT_DIR/signing-key.pub.pem"
if [ ! -s "$private_key" ] || [ ! -s "$public_key" ]; then
  openssl genrsa -out "$private_key" 2048 2>/dev/null
  chmod 600 "$private_key"
  openssl rsa -in "$private_key" -pubout -out "$public_key" 2>/dev/null
  echo "wrote $private_key (mode 0600) and $public_key" >&2
else
  echo "$private_key and $public_key exist: kept" >&2
fi

ensure_authorizer_function

if authorizer_exists ACTIVE iot describe-authorizer --authorizer-name "$SIGNED_AUTHORIZER" \
    --query authorizerDescription.status --output text; then
  authorizer_run iot update-authorizer --authorizer-name "$SIGNED_AUTHORIZER" \
    --authorizer-function-arn "$FUNCTION_ARN" --token-key-name "$TOKEN_KEY_NAME" \
    --token-signing-public-keys "key1=$(cat "$public_key")" --status ACTIVE >/dev/null
else
  authorizer_run iot create-authorizer --authorizer-name "$SIGNED_AUTHORIZER" \
    --authorizer-function-arn "$FUNCTION_ARN" --token-key-name "$TOKEN_KEY_NAME" \
    --token-signing-public-keys "key1=$(cat "$public_key")" --status ACTIVE >/dev/null
fi
ensure_invoke_permission "$SIGNED_AUTHORIZER" "$account"

echo
echo "Ready. Run, from the repository root:"
echo "cargo run -p custom-auth-signed -- --authorizer $SIGNED_AUTHORIZER --authorizer-token-key-name $TOKEN_KEY_NAME --authorizer-token-key-value allow --authorizer-private-key $(quote "$private_key") $endpoint"
