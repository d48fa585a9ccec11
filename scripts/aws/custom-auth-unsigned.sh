#!/usr/bin/env bash
# Creates what samples/custom-auth-unsigned needs in your AWS account: an execution role,
# scripts/example_authorizer.py as the Lambda function example-authorizer (with a new random
# password), the authorizer example-authorizer (signing disabled, the default authorizer), and
# the permission for AWS IoT to call the function. Prints the sample's run line. Run it twice and
# it creates nothing twice. Undo: teardown.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: scripts/aws/custom-auth-unsigned.sh --region REGION --yes [--out-dir DIR] [--endpoint-url URL]

Deploys scripts/example_authorizer.py as the Lambda function $FUNCTION (role $ROLE), creates
the authorizer $UNSIGNED_AUTHORIZER (signing disabled) and makes it the default authorizer.
The password is in DIR/authorizer-password (mode 0600).
EOF
  usage_common
}

parse_args "$@"

account="$(account_id)"
endpoint="$(data_endpoint)"
ensure_authorizer_function

if authorizer_exists ACTIVE iot describe-authorizer --authorizer-name "$UNSIGNED_AUTHORIZER" \
    --query authorizerDescription.status --output text; then
  authorizer_run iot update-authorizer --authorizer-name "$UNSIGNED_AUTHORIZER" \
    --authorizer-function-arn "$FUNCTION_ARN" --status ACTIVE >/dev/null
else
  authorizer_run iot create-authorizer --authorizer-name "$UNSIGNED_AUTHORIZER" \
    --authorizer-function-arn "$FUNCTION_ARN" --signing-disabled --status ACTIVE >/dev/null
fi
ensure_invoke_permission "$UNSIGNED_AUTHORIZER" "$account"
authorizer_run iot set-default-authorizer --authorizer-name "$UNSIGNED_AUTHORIZER" >/dev/null

echo
echo "Ready. Run, from the repository root:"
echo "cargo run -p custom-auth-unsigned -- --authorizer $UNSIGNED_AUTHORIZER --username $AUTH_USERNAME --password \"\$(cat $(quote "$OUT_DIR/authorizer-password"))\" $endpoint"
