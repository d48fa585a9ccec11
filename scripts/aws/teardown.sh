#!/usr/bin/env bash
# Removes everything the scripts in scripts/aws/ create, in the order AWS requires: the
# authorizers (the default-authorizer setting first), the Lambda function (its permissions go
# with it), its execution role, the IAM policy (detached from every user, role and group), the
# certificate recorded in DIR/certificate-id, the IoT policy (detached from every target), and the
# local files in DIR. What is already gone is skipped, so it can run any number of times.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: scripts/aws/teardown.sh --region REGION --yes [--out-dir DIR] [--endpoint-url URL]

Deletes the authorizers $UNSIGNED_AUTHORIZER and $SIGNED_AUTHORIZER, the Lambda function
$FUNCTION, the role $ROLE, the IAM policy $IAM_POLICY, the certificate whose id is in
DIR/certificate-id, the IoT policy $IOT_POLICY, and the files the scripts wrote in DIR.
A certificate that DIR does not name is detached from $IOT_POLICY but not deleted.
EOF
  usage_common
}

parse_args "$@"
account="$(account_id)"

# Authorizers: no longer the default, INACTIVE, then deleted.
if authorizer_exists "$UNSIGNED_AUTHORIZER" iot describe-default-authorizer \
    --query authorizerDescription.authorizerName --output text \
    && [ "$LOOKUP_OUTPUT" = "$UNSIGNED_AUTHORIZER" ]; then
  authorizer_run iot clear-default-authorizer
fi
for authorizer in "$UNSIGNED_AUTHORIZER" "$SIGNED_AUTHORIZER"; do
  if authorizer_exists ACTIVE iot describe-authorizer --authorizer-name "$authorizer" \
      --query authorizerDescription.status --output text; then
    authorizer_run iot update-authorizer --authorizer-name "$authorizer" --status INACTIVE >/dev/null
    authorizer_run iot delete-authorizer --authorizer-name "$authorizer"
  fi
done

if aws_exists lambda get-function --function-name "$FUNCTION" \
    --query Configuration.FunctionArn --output text; then
  aws_run lambda delete-function --function-name "$FUNCTION" >/dev/null
fi

if aws_exists iam get-role --role-name "$ROLE" --query Role.Arn --output text; then
  for arn in $(aws_run iam list-attached-role-policies --role-name "$ROLE" \
      --query 'AttachedPolicies[].PolicyArn' --output text); do
    aws_run iam detach-role-policy --role-name "$ROLE" --policy-arn "$arn"
  done
  aws_run iam delete-role --role-name "$ROLE"
fi

policy_arn="arn:aws:iam::${account}:policy/$IAM_POLICY"
if aws_exists iam get-policy --policy-arn "$policy_arn" --query Policy.Arn --output text; then
  for user in $(aws_run iam list-entities-for-policy --policy-arn "$policy_arn" \
      --query 'PolicyUsers[].UserName' --output text); do
    aws_run iam detach-user-policy --user-name "$user" --policy-arn "$policy_arn"
  done
  for role in $(aws_run iam list-entities-for-policy --policy-arn "$policy_arn" \
      --query 'PolicyRoles[].RoleName' --output text); do
    aws_run iam detach-role-policy --role-name "$role" --policy-arn "$policy_arn"
  done
  for group in $(aws_run iam list-entities-for-policy --policy-arn "$policy_arn" \
      --query 'PolicyGroups[].GroupName' --output text); do
    aws_run iam detach-group-policy --group-name "$group" --policy-arn "$policy_arn"
  done
  for version in $(aws_run iam list-policy-versions --policy-arn "$policy_arn" \
      --query 'Versions[?!IsDefaultVersion].VersionId' --output text); do
    aws_run iam delete-policy-version --policy-arn "$policy_arn" --version-id "$version"
  done
  aws_run iam delete-policy --policy-arn "$policy_arn"
fi

# The certificate mtls-connect.sh created (its id is in DIR/certificate-id).
own_cert=""
if [ -s "$OUT_DIR/certificate-id" ]; then
  own_cert="$(cat "$OUT_DIR/certificate-id")"
fi
if aws_exists iot get-policy --policy-name "$IOT_POLICY" --query policyName --output text; then
  for target in $(aws_run iot list-targets-for-policy --policy-name "$IOT_POLICY" \
      --query targets --output text); do
    aws_run iot detach-policy --policy-name "$IOT_POLICY" --target "$target"
    if [ "${target##*/}" != "$own_cert" ]; then
      echo "  $target was not created by these scripts (not in $OUT_DIR/certificate-id): detached, not deleted" >&2
    fi
  done
  for version in $(aws_run iot list-policy-versions --policy-name "$IOT_POLICY" \
      --query 'policyVersions[?!isDefaultVersion].versionId' --output text); do
    aws_run iot delete-policy-version --policy-name "$IOT_POLICY" --policy-version-id "$version"
  done
  aws_run iot delete-policy --policy-name "$IOT_POLICY"
fi
if [ -n "$own_cert" ] && aws_exists iot describe-certificate --certificate-id "$own_cert" \
    --query certificateDescription.status --output text; then
  if [ "$LOOKUP_OUTPUT" != INACTIVE ]; then
    aws_run iot update-certificate --certificate-id "$own_cert" --new-status INACTIVE
  fi
  aws_run iot delete-certificate --certificate-id "$own_cert"
fi

for file in device.pem.crt private.pem.key public.pem.key certificate-id policy.json \
    authorizer-password authorizer.zip lambda-trust.json signing-key.pem signing-key.pub.pem; do
  if [ -e "$OUT_DIR/$file" ]; then
    rm -f "$OUT_DIR/$file"
    echo "removed $OUT_DIR/$file" >&2
  fi
done
rmdir "$OUT_DIR" 2>/dev/null || true
echo "Done: nothing the scripts in scripts/aws/ create is left in $REGION."
