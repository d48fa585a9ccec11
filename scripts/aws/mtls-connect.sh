#!/usr/bin/env bash
# Creates what samples/mtls-connect needs in your AWS account: an active certificate with its
# key pair, and the IoT policy samples-connect (iot:Connect as client id test-*) attached to it.
# Prints the sample's run line. Run it twice and it creates nothing twice. Undo: teardown.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: scripts/aws/mtls-connect.sh --region REGION --yes [--out-dir DIR] [--endpoint-url URL]

Creates an active AWS IoT certificate (device.pem.crt, private.pem.key in DIR, mode 0600) and
the IoT policy $IOT_POLICY attached to it, then prints the mtls-connect run line.
EOF
  usage_common
}

parse_args "$@"

account="$(account_id)"
endpoint="$(data_endpoint)"

cert="$OUT_DIR/device.pem.crt"
key="$OUT_DIR/private.pem.key"
id_file="$OUT_DIR/certificate-id"
cert_arn=""
if [ -s "$id_file" ] && [ -s "$cert" ] && [ -s "$key" ] \
    && aws_exists iot describe-certificate --certificate-id "$(cat "$id_file")" \
      --query certificateDescription.status --output text \
    && [ "$LOOKUP_OUTPUT" = ACTIVE ]; then
  cert_arn="arn:aws:iot:${REGION}:${account}:cert/$(cat "$id_file")"
  echo "the certificate in $id_file is registered and ACTIVE: kept" >&2
else
  # The files are written under umask 077: mode 0600. --query keeps the private key off the
  # terminal.
  cert_arn="$(aws_run iot create-keys-and-certificate --set-as-active \
    --certificate-pem-outfile "$cert" --public-key-outfile "$OUT_DIR/public.pem.key" \
    --private-key-outfile "$key" --query certificateArn --output text)"
  chmod 600 "$cert" "$key" "$OUT_DIR/public.pem.key"
  echo "${cert_arn##*/}" >"$id_file"
  echo "wrote $cert and $key (mode 0600); the certificate id is in $id_file" >&2
fi

if ! aws_exists iot get-policy --policy-name "$IOT_POLICY" --query policyName --output text; then
  write_connect_policy "$OUT_DIR/policy.json" "$account"
  aws_run iot create-policy --policy-name "$IOT_POLICY" \
    --policy-document "file://$OUT_DIR/policy.json" >/dev/null
fi
if ! aws_run iot list-attached-policies --target "$cert_arn" \
    --query 'policies[].policyName' --output text | tr '\t' '\n' | grep -q -x -F "$IOT_POLICY"; then
  aws_run iot attach-policy --policy-name "$IOT_POLICY" --target "$cert_arn"
fi

echo
echo "Ready. Run, from the repository root:"
echo "cargo run -p mtls-connect -- --cert $(quote "$cert") --key $(quote "$key") $endpoint"
