#!/usr/bin/env bash
# Creates what samples/websocket-connect needs in your AWS account: the IAM policy
# iot-connect-test-clients (iot:Connect as client id test-*), attached to your IAM user (or to the
# user or role you name). Prints the sample's run line. Run it twice and it creates nothing
# twice. Undo: teardown.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: scripts/aws/websocket-connect.sh --region REGION --yes [--user NAME | --role NAME]
           [--out-dir DIR] [--endpoint-url URL]

Creates the IAM policy $IAM_POLICY and attaches it to --user or --role, or, with neither, to
the IAM user your credentials belong to; then prints the websocket-connect run line.
EOF
  usage_common
}

parse_args "$@"
[ -z "$IAM_USER" ] || [ -z "$IAM_ROLE" ] || die "give --user or --role, not both"

account="$(account_id)"
endpoint="$(data_endpoint)"

if [ -z "$IAM_USER" ] && [ -z "$IAM_ROLE" ]; then
  caller="$(aws_run sts get-caller-identity --query Arn --output text)"
  case "$caller" in
    arn:aws:iam::*:user/*) IAM_USER="${caller##*/}" ;;
    *) die "your credentials are not an IAM user's ($caller): name the user or role that the sample's credentials belong to with --user NAME or --role NAME" ;;
  esac
fi

policy_arn="arn:aws:iam::${account}:policy/$IAM_POLICY"
if ! aws_exists iam get-policy --policy-arn "$policy_arn" --query Policy.Arn --output text; then
  write_connect_policy "$OUT_DIR/policy.json" "$account"
  aws_run iam create-policy --policy-name "$IAM_POLICY" \
    --policy-document "file://$OUT_DIR/policy.json" --query Policy.Arn --output text >/dev/null
fi
if [ -n "$IAM_USER" ]; then
  if ! aws_run iam list-attached-user-policies --user-name "$IAM_USER" \
      --query 'AttachedPolicies[].PolicyArn' --output text | tr '\t' '\n' | grep -q -x -F "$policy_arn"; then
    aws_run iam attach-user-policy --user-name "$IAM_USER" --policy-arn "$policy_arn"
  fi
else
  if ! aws_run iam list-attached-role-policies --role-name "$IAM_ROLE" \
      --query 'AttachedPolicies[].PolicyArn' --output text | tr '\t' '\n' | grep -q -x -F "$policy_arn"; then
    aws_run iam attach-role-policy --role-name "$IAM_ROLE" --policy-arn "$policy_arn"
  fi
fi

echo
echo "Ready. Run, from the repository root, with the credentials of ${IAM_USER:+user $IAM_USER}${IAM_ROLE:+role $IAM_ROLE}:"
echo "cargo run -p websocket-connect -- $endpoint"
