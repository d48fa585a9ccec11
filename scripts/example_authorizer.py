#!/usr/bin/env python3
"""Example AWS IoT Core custom authorizer, usable as a Lambda and as an iot-core-local command.

It allows a connection when
  * the token is "allow" and AWS IoT verified its signature (signatureVerified), or
  * the MQTT username (the part before the last '?') and password equal EXAMPLE_AUTH_USERNAME /
    EXAMPLE_AUTH_PASSWORD (defaults "demo-user" / "demo-password"),
and then returns a policy that allows iot:Connect as any client id and, for that client id,
iot:Publish/iot:Receive on topics "<clientId>/..." and iot:Subscribe on filters "<clientId>/...".
Everything else gets a valid deny (isAuthenticated false). The password is never printed.

Policy ARNs use AWS_REGION (default us-east-1) and EXAMPLE_AUTH_ACCOUNT_ID (as a Lambda: the
account of the function's ARN; otherwise 123456789012).

As a Lambda (Python 3.9 or later, standard library only), it also prints the request event it
received (password, token and token signature replaced by ***) and the response it returned, so
both are in the function's CloudWatch log group (/aws/lambda/<function name>). As a command it
prints only the response.

scripts/aws/custom-auth-unsigned.sh and custom-auth-signed.sh deploy it; by hand (AWS CLI v1 or
v2, docs/WORKSHOP.md 2.5 and 2.6 show every step, the execution role included):
    zip -j authorizer.zip scripts/example_authorizer.py
    aws lambda create-function --function-name example-authorizer --runtime python3.12 \\
        --handler example_authorizer.lambda_handler --zip-file fileb://authorizer.zip \\
        --role <an execution role ARN>
    aws iot create-authorizer --authorizer-name example-authorizer --status ACTIVE \\
        --authorizer-function-arn <function ARN> --signing-disabled
    aws lambda add-permission --function-name example-authorizer \\
        --statement-id iot-example-authorizer --action lambda:InvokeFunction \\
        --principal iot.amazonaws.com --source-arn <authorizer ARN>
For signed tokens, make a key pair and create a second authorizer with the public key:
    openssl genrsa -out signing-key.pem 2048
    openssl rsa -in signing-key.pem -pubout -out signing-key.pub.pem
    aws iot create-authorizer --authorizer-name example-signed-authorizer --status ACTIVE \\
        --authorizer-function-arn <function ARN> --token-key-name token \\
        --token-signing-public-keys key1="$(cat signing-key.pub.pem)"

With iot-core-local (iot-core-local.toml; the event arrives on stdin, the response goes to
stdout):
    [[authorizer]]
    name = "example-authorizer"
    status = "ACTIVE"
    signing_disabled = true
    [authorizer.function.command]
    argv = ["python3", "scripts/example_authorizer.py"]
"""

import base64
import hmac
import json
import os
import re
import sys


def _policy(region, account_id):
    arn = "arn:aws:iot:%s:%s" % (region, account_id)
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": arn + ":client/${iot:ClientId}",
                },
                {
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": arn + ":topic/${iot:ClientId}/*",
                },
                {
                    "Effect": "Allow",
                    "Action": "iot:Subscribe",
                    "Resource": arn + ":topicfilter/${iot:ClientId}/*",
                },
            ],
        },
        separators=(",", ":"),
    )


def _password_matches(mqtt, expected):
    encoded = mqtt.get("password")
    if not isinstance(encoded, str):
        return False
    try:
        password = base64.b64decode(encoded, validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(password, expected.encode("utf-8"))


def _principal(name):
    """principalId must match ^[a-zA-Z0-9]{1,128}$."""
    cleaned = "".join(c for c in name if c.isascii() and c.isalnum())[:128]
    return cleaned or "exampleprincipal"


def decide(event, account_id=None):
    """The authorizer response for one request event (a dict)."""
    region = os.environ.get("AWS_REGION", "us-east-1")
    account_id = os.environ.get("EXAMPLE_AUTH_ACCOUNT_ID") or account_id or "123456789012"
    expected_user = os.environ.get("EXAMPLE_AUTH_USERNAME", "demo-user")
    expected_password = os.environ.get("EXAMPLE_AUTH_PASSWORD", "demo-password")

    protocol_data = event.get("protocolData") or {}
    mqtt = protocol_data.get("mqtt") or {}
    username = mqtt.get("username")
    user = username.rsplit("?", 1)[0] if isinstance(username, str) else None

    principal = None
    if event.get("signatureVerified") is True and event.get("token") == "allow":
        principal = "signedtoken"
    elif user is not None and hmac.compare_digest(
        user.encode("utf-8"), expected_user.encode("utf-8")
    ) and _password_matches(mqtt, expected_password):
        principal = _principal(user)

    response = {
        "isAuthenticated": principal is not None,
        "principalId": principal or "denied",
        "policyDocuments": [_policy(region, account_id)] if principal else [],
        "disconnectAfterInSeconds": 86400,
        "refreshAfterInSeconds": 300,
    }
    return response


_MASK = "***"
_SIGNATURE_PARAMETER = re.compile(r"(x-amz-customauthorizer-signature=)[^&]*", re.IGNORECASE)


def _masked(event):
    """A copy of the request event for a log: password, token and token signature are ***."""
    token = event.get("token")

    def mask_text(text):
        text = _SIGNATURE_PARAMETER.sub(lambda m: m.group(1) + _MASK, text)
        if isinstance(token, str) and token:
            text = text.replace(token, _MASK)
        return text

    def walk(value, key=None):
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key in ("password", "token") and value is not None:
            return _MASK
        if isinstance(key, str) and key.lower() == "x-amz-customauthorizer-signature":
            return _MASK
        if isinstance(value, str):
            return mask_text(value)
        return value

    return walk(event)


def lambda_handler(event, context):
    """AWS Lambda entry point. Logs (to the function's CloudWatch log group) the request event,
    masked, and the response."""
    account_id = None
    arn = getattr(context, "invoked_function_arn", None)
    if isinstance(arn, str) and arn.count(":") >= 4:
        account_id = arn.split(":")[4]
    print("example_authorizer: received %s" % json.dumps(_masked(event), sort_keys=True))
    response = decide(event, account_id)
    print("example_authorizer: returned %s" % json.dumps(response, sort_keys=True))
    return response


def main():
    try:
        event = json.load(sys.stdin)
    except ValueError as e:
        print("example_authorizer: stdin is not a JSON request event: %s" % e, file=sys.stderr)
        return 1
    if not isinstance(event, dict):
        print("example_authorizer: the request event must be a JSON object", file=sys.stderr)
        return 1
    print(json.dumps(decide(event)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
