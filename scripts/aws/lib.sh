# Shared by the scripts in scripts/aws/ (sourced, not run). Bash, AWS CLI calls only.
#
# Every AWS command is printed before it runs ("+ aws ..."), with secrets replaced by ***.
# Every create is preceded by a look, so running a script twice creates nothing twice.

# The names every script and every doc uses. scripts/aws/teardown.sh removes exactly these.
IOT_POLICY=samples-connect
IAM_POLICY=iot-connect-test-clients
ROLE=iot-example-authorizer-role
BASIC_EXECUTION_POLICY_ARN=arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole
FUNCTION=example-authorizer
UNSIGNED_AUTHORIZER=example-authorizer
SIGNED_AUTHORIZER=example-signed-authorizer
AUTH_USERNAME=demo-user
TOKEN_KEY_NAME=token

REGION=""
CONFIRMED=""
ENDPOINT_URL=""
OUT_DIR="$PWD/aws-samples"
IAM_USER=""
IAM_ROLE=""
SECRETS=()

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

die() {
  echo "error: $*" >&2
  exit 1
}

usage_common() {
  cat <<EOF
Required:
  --region REGION       the AWS region to work in (never taken from your configuration)
  --yes                 confirm that this changes your AWS account
Optional:
  --out-dir DIR         where local files (keys, certificates, passwords) go (default ./aws-samples)
  --endpoint-url URL    send every AWS call to URL instead of AWS (for a local stand-in)
EOF
}

# parse_args "$@": the options every script takes, plus --user/--role where allowed.
parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --region) [ $# -ge 2 ] || die "--region needs a value"; REGION="$2"; shift 2 ;;
      --yes) CONFIRMED=1; shift ;;
      --out-dir) [ $# -ge 2 ] || die "--out-dir needs a value"; OUT_DIR="$2"; shift 2 ;;
      --endpoint-url) [ $# -ge 2 ] || die "--endpoint-url needs a value"; ENDPOINT_URL="$2"; shift 2 ;;
      --user) [ $# -ge 2 ] || die "--user needs a value"; IAM_USER="$2"; shift 2 ;;
      --role) [ $# -ge 2 ] || die "--role needs a value"; IAM_ROLE="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  [ -n "$REGION" ] || { usage >&2; die "--region is required (this script never guesses a region)"; }
  [ -n "$CONFIRMED" ] || { usage >&2; die "--yes is required: this script creates or deletes resources in your AWS account"; }
  if [ -n "${SAMPLES_AWS_STAND_IN:-}" ] && [ -z "$ENDPOINT_URL" ]; then
    die "SAMPLES_AWS_STAND_IN is set but --endpoint-url is not: the stand-in mode is for a local stand-in only"
  fi
  command -v aws >/dev/null || die "the AWS CLI (aws) is not on PATH"
  mkdir -p "$OUT_DIR"
  chmod 700 "$OUT_DIR"
  OUT_DIR="$(cd "$OUT_DIR" && pwd)"
  # Everything this script writes is readable by its owner only.
  umask 077
}

# quote ARG: ARG as a shell word (single-quoted unless it is plain).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# show ARGS...: the command line as it is printed, every secret replaced by ***.
show() {
  local line="aws" word secret
  for word in "$@"; do
    for secret in "${SECRETS[@]+"${SECRETS[@]}"}"; do
      [ -n "$secret" ] && word="${word//"$secret"/***}"
    done
    line+=" $(quote "$word")"
  done
  printf '%s' "$line"
}

# aws_run ARGS...: print the command, then run it (its output goes to stdout).
aws_run() {
  local extra=()
  [ -n "$ENDPOINT_URL" ] && extra=(--endpoint-url "$ENDPOINT_URL")
  echo "+ $(show "$@" --region "$REGION" "${extra[@]+"${extra[@]}"}")" >&2
  aws "$@" --region "$REGION" "${extra[@]+"${extra[@]}"}"
}

# aws_capture ARGS...: print the command, run it; its output in AWS_OUT, its errors in AWS_ERR.
aws_capture() {
  local extra=() err rc=0
  [ -n "$ENDPOINT_URL" ] && extra=(--endpoint-url "$ENDPOINT_URL")
  echo "+ $(show "$@" --region "$REGION" "${extra[@]+"${extra[@]}"}")" >&2
  err="$(mktemp)"
  AWS_OUT="$(aws "$@" --region "$REGION" "${extra[@]+"${extra[@]}"}" 2>"$err")" || rc=$?
  AWS_ERR="$(cat "$err")"
  rm -f "$err"
  return "$rc"
}

# aws_exists ARGS...: run a look-up command; true if it found the thing, false if the service
# said it does not exist; any other failure stops the script.
aws_exists() {
  if aws_capture "$@"; then
    LOOKUP_OUTPUT="$AWS_OUT"
    return 0
  fi
  if grep -q -E 'ResourceNotFoundException|NoSuchEntity|NotFoundException|\(404\)' <<<"$AWS_ERR"; then
    LOOKUP_OUTPUT=""
    echo "  (not there)" >&2
    return 1
  fi
  echo "$AWS_ERR" >&2
  die "the look-up above failed"
}

# The IoT custom-authorizer calls. A local stand-in (moto) does not implement them: with
# SAMPLES_AWS_STAND_IN set (only allowed together with --endpoint-url) they are printed, written
# to $SAMPLES_AWS_SKIPPED_LOG for the CI check to validate, and not run. Their look-ups then
# answer "there" when SAMPLES_AWS_STAND_IN=present and "not there" otherwise, so that the check
# can take both paths of each script.
stand_in() { [ -n "${SAMPLES_AWS_STAND_IN:-}" ]; }

skip_on_stand_in() {
  echo "+ $(show "$@" --region "$REGION")   [skipped: the local stand-in has no such API]" >&2
  if [ -n "${SAMPLES_AWS_SKIPPED_LOG:-}" ]; then
    local word line=""
    for word in "$@" --region "$REGION"; do line+="$(printf '%q' "$word") "; done
    echo "$line" >>"$SAMPLES_AWS_SKIPPED_LOG"
  fi
}

authorizer_run() {
  if stand_in; then skip_on_stand_in "$@"; else aws_run "$@"; fi
}

# authorizer_exists NAME ARGS...: aws_exists for an authorizer look-up; on the stand-in, NAME
# is what the look-up answers in LOOKUP_OUTPUT when it says "there".
authorizer_exists() {
  local name="$1"
  shift
  if stand_in; then
    skip_on_stand_in "$@"
    LOOKUP_OUTPUT="$name"
    [ "$SAMPLES_AWS_STAND_IN" = present ]
    return
  fi
  aws_exists "$@"
}

account_id() {
  aws_run sts get-caller-identity --query Account --output text
}

data_endpoint() {
  aws_run iot describe-endpoint --endpoint-type iot:Data-ATS --query endpointAddress --output text
}

# write_connect_policy FILE ACCOUNT: the policy every sample needs (iot:Connect as test-*).
write_connect_policy() {
  cat >"$1" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "iot:Connect",
      "Resource": "arn:aws:iot:${REGION}:$2:client/test-*"
    }
  ]
}
EOF
  echo "wrote $1" >&2
}

# ensure_authorizer_function: the execution role, scripts/example_authorizer.py as the Lambda
# function, and the password it expects (in $OUT_DIR/authorizer-password, mode 0600).
# Sets FUNCTION_ARN.
ensure_authorizer_function() {
  local root role_arn password
  root="$(repo_root)"

  if [ ! -s "$OUT_DIR/authorizer-password" ]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$OUT_DIR/authorizer-password")
    echo "wrote a new password to $OUT_DIR/authorizer-password (mode 0600)" >&2
  fi
  password="$(cat "$OUT_DIR/authorizer-password")"
  SECRETS+=("$password")

  if aws_exists iam get-role --role-name "$ROLE" --query Role.Arn --output text; then
    role_arn="$LOOKUP_OUTPUT"
  else
    cat >"$OUT_DIR/lambda-trust.json" <<'EOF'
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
  ]
}
EOF
    role_arn="$(aws_run iam create-role --role-name "$ROLE" \
      --assume-role-policy-document "file://$OUT_DIR/lambda-trust.json" \
      --query Role.Arn --output text)"
  fi
  if ! aws_run iam list-attached-role-policies --role-name "$ROLE" \
      --query 'AttachedPolicies[].PolicyArn' --output text | grep -q -F "$BASIC_EXECUTION_POLICY_ARN"; then
    aws_run iam attach-role-policy --role-name "$ROLE" --policy-arn "$BASIC_EXECUTION_POLICY_ARN"
  fi

  rm -f "$OUT_DIR/authorizer.zip"
  (cd "$root/scripts" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.write("example_authorizer.py")' "$OUT_DIR/authorizer.zip")
  echo "wrote $OUT_DIR/authorizer.zip (scripts/example_authorizer.py)" >&2

  local environment="Variables={EXAMPLE_AUTH_USERNAME=$AUTH_USERNAME,EXAMPLE_AUTH_PASSWORD=$password}"
  if aws_exists lambda get-function --function-name "$FUNCTION" \
      --query Configuration.FunctionArn --output text; then
    FUNCTION_ARN="$LOOKUP_OUTPUT"
    aws_run lambda update-function-code --function-name "$FUNCTION" \
      --zip-file "fileb://$OUT_DIR/authorizer.zip" --query LastUpdateStatus --output text >/dev/null
    aws_run lambda wait function-updated-v2 --function-name "$FUNCTION"
    aws_run lambda update-function-configuration --function-name "$FUNCTION" \
      --environment "$environment" --query LastUpdateStatus --output text >/dev/null
    aws_run lambda wait function-updated-v2 --function-name "$FUNCTION"
  else
    # A new role can take a few seconds before Lambda may assume it.
    local attempt
    for attempt in 1 2 3 4 5 6; do
      if aws_capture lambda create-function --function-name "$FUNCTION" \
          --runtime python3.12 --handler example_authorizer.lambda_handler \
          --zip-file "fileb://$OUT_DIR/authorizer.zip" --role "$role_arn" \
          --environment "$environment" --query FunctionArn --output text; then
        FUNCTION_ARN="$AWS_OUT"
        break
      fi
      if [ "$attempt" -lt 6 ] && grep -q 'cannot be assumed' <<<"$AWS_ERR"; then
        echo "  (the new role is not usable yet; trying again in 10 s)" >&2
        sleep 10
        continue
      fi
      echo "$AWS_ERR" >&2
      die "could not create the Lambda function"
    done
    aws_run lambda wait function-active-v2 --function-name "$FUNCTION"
  fi
}

# ensure_invoke_permission AUTHORIZER ACCOUNT: let AWS IoT call the function for AUTHORIZER.
ensure_invoke_permission() {
  local statement="iot-$1"
  if aws_exists lambda get-policy --function-name "$FUNCTION" --query Policy --output text \
      && grep -q -E "\"Sid\": ?\"$statement\"" <<<"$LOOKUP_OUTPUT"; then
    return 0
  fi
  aws_run lambda add-permission --function-name "$FUNCTION" \
    --statement-id "$statement" --action lambda:InvokeFunction \
    --principal iot.amazonaws.com \
    --source-arn "arn:aws:iot:${REGION}:$2:authorizer/$1" >/dev/null
}
