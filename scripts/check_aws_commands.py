#!/usr/bin/env python3
"""Checks every documented AWS CLI command and the scripts in scripts/aws/, without AWS.

Run by scripts/check-aws-commands.sh, which makes the venv (AWS CLI v1 and moto from PyPI) and
puts its `aws` first on PATH. Nothing here contacts AWS: every `aws` call gets dummy credentials
and either an endpoint where nothing listens (127.0.0.1:9) or the local moto server.

1. Commands (every tracked *.md, and the docstring of scripts/example_authorizer.py):
   - a line of a shell block that starts with an option means the line before it lost its
     "\\";
   - every `aws ...` command in a fenced block ("\\" continuations joined, placeholders like
     <region> replaced by dummy values) must fail only at the connection, never at the CLI's
     parameter validation; an unknown placeholder fails the check;
   - no inline code span holding an `aws` command wraps onto a second line (copied from the raw
     Markdown, the first line would run on its own);
   - every file an `aws` command reads (file://, fileb://, $(cat ...), -sign) is written by an
     earlier step of the same document, or the document says to save it under that name;
   - every resource name a document creates is one scripts/aws/teardown.sh removes;
   - `--mqtt-context` always comes with `--cli-binary-format raw-in-base64-out` (AWS CLI v2
     reads blobs as base64 without it; CLI v1 has no such flag and always behaves as with it, so
     the check, which runs CLI v1, leaves the flag out as the docs tell v1 users to);
   - each `test-invoke-authorizer` command's request (from the CLI's --debug output) is turned
     into the event AWS IoT would hand the document's authorizer Lambda (its own Python block,
     else scripts/example_authorizer.py), and that Lambda must allow it;
   - every Lambda in the docs returns what the contract asks: policyDocuments as JSON strings.
2. scripts/example_authorizer.py's Lambda mode logs the event (masked) and its response.
3. scripts/aws/* (left out with --docs-only): each provisioning script runs twice against moto, which then holds exactly
   one of each thing; the IoT authorizer calls moto lacks are run as in 1 instead; the teardown
   leaves moto empty of everything the scripts create.
"""

import ast
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEAD_ENDPOINT = "http://127.0.0.1:9"
REGION = "us-east-1"
ACCOUNT = "123456789012"
CERT_ID = "a" * 64
CONNECTION_FAILURE = "Could not connect to the endpoint URL"

# Shell variables the documents set in earlier steps, with dummy values.
VARIABLES = {
    "REGION": REGION,
    "ACCOUNT_ID": ACCOUNT,
    "ENDPOINT": "example-ats.iot.us-east-1.amazonaws.com",
    "CERT_ARN": "arn:aws:iot:%s:%s:cert/%s" % (REGION, ACCOUNT, CERT_ID),
    "ROLE_ARN": "arn:aws:iam::%s:role/iot-example-authorizer-role" % ACCOUNT,
    "FUNCTION_ARN": "arn:aws:lambda:%s:%s:function:example-authorizer" % (REGION, ACCOUNT),
    "a": "example-authorizer",
}

# Placeholders the documents use, with dummy values. A new one must be added here.
PLACEHOLDERS = {
    "region": REGION,
    "account-id": ACCOUNT,
    "certificate-arn": VARIABLES["CERT_ARN"],
    "certificate-id": CERT_ID,
    "id": CERT_ID,
    "user": "workshop-user",
    "role": "workshop-role",
    "lambda-execution-role": "iot-example-authorizer-role",
    "an execution role ARN": VARIABLES["ROLE_ARN"],
    "function ARN": VARIABLES["FUNCTION_ARN"],
    "authorizer ARN": "arn:aws:iot:%s:%s:authorizer/example-authorizer" % (REGION, ACCOUNT),
    "name": "example-authorizer",
}

# Commands that set up the CLI itself rather than call a service (interactive, or read the local
# configuration): the check does not run them.
LOCAL_COMMANDS = ("aws configure", "aws sso ")

DUMMY_PASSWORD = "0123456789abcdef0123456789abcdef"


class Failures:
    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append("%s: %s" % (where, message))
        print("FAIL %s: %s" % (where, message), flush=True)


# ---------------------------------------------------------------------------------------------
# Extraction


def tracked_markdown():
    out = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return sorted(p for p in out.splitlines() if p)


def docstring_text(path):
    with open(os.path.join(ROOT, path)) as f:
        return ast.get_docstring(ast.parse(f.read()), clean=False) or ""


class Doc:
    """One document: its fenced code blocks (with the line they start on) and its prose."""

    def __init__(self, path, text, indented_commands=False):
        self.path = path
        self.text = text
        self.blocks = []  # (info, first line number, [lines])
        self.prose = []  # (line number, line)
        if indented_commands:
            self.blocks.append(("sh", 1, text.splitlines()))
            return
        fence = None
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if fence is None and stripped.startswith("```"):
                fence = (stripped[3:].strip(), number + 1, [])
            elif fence is not None and stripped.startswith("```"):
                self.blocks.append(fence)
                fence = None
            elif fence is not None:
                fence[2].append(line)
            else:
                self.prose.append((number, line))

    def python_blocks(self):
        return [(n, "\n".join(_dedent(lines))) for info, n, lines in self.blocks if info == "python"]


def _dedent(lines):
    indents = [len(l) - len(l.lstrip()) for l in lines if l.strip()]
    cut = min(indents) if indents else 0
    return [l[cut:] for l in lines]


def logical_lines(lines, first):
    """Joins "\\" continuations and drops here-document bodies: [(line number, text)]."""
    out = []
    heredoc_end = None
    pending, start = "", None
    for offset, raw in enumerate(lines):
        number = first + offset
        line = raw.strip()
        if heredoc_end is not None:
            if line == heredoc_end:
                heredoc_end = None
            continue
        if start is None:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        whole = pending + line
        out.append((start, whole))
        pending, start = "", None
        m = re.search(r"<<-?\s*'?\"?([A-Za-z_]+)'?\"?", whole)
        if m:
            heredoc_end = m.group(1)
    if pending:
        out.append((start, pending.strip()))
    return out


AWS_START = re.compile(r"(?:^|[;&|(]\s*|\bdo\s+|\bthen\s+)(aws\s)")


def command_end(text, start):
    """Where the shell command that starts at `start` ends: at an unquoted ; | & # or at the
    ) that closes a $( ) it stands in. Quotes and nested $( ) are followed."""
    stack = []  # '"' inside double quotes, '(' inside $( ) or ( )
    i = start
    while i < len(text):
        c = text[i]
        top = stack[-1] if stack else None
        if top == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                stack.pop()
            elif text.startswith("$(", i):
                stack.append("(")
                i += 1
        elif c == "'":
            i = text.find("'", i + 1)
            if i < 0:
                return len(text)
        elif c == "\\":
            i += 1
        elif c == '"':
            stack.append('"')
        elif text.startswith("$(", i):
            stack.append("(")
            i += 1
        elif c == "(":
            stack.append("(")
        elif c == ")":
            if not stack:
                return i
            stack.pop()
        elif not stack and (c in ";|&" or (c == "#" and text[i - 1].isspace())):
            return i
        i += 1
    return len(text)


def aws_commands(doc, failures):
    """[(line number, command)] for every `aws` command in the document's code blocks."""
    found = []
    for info, first, lines in doc.blocks:
        if info not in ("sh", "bash", "shell", "console"):
            continue
        for number, line in logical_lines(lines, first):
            if line.startswith("#"):
                continue
            if line.startswith("-"):
                failures.add("%s:%d" % (doc.path, number),
                             "a shell line starts with an option (`%s`): the line before it "
                             "lacks its \\" % line[:40])
                continue
            for m in AWS_START.finditer(line):
                start = m.start(1)
                found.append((number, line[start:command_end(line, start)].strip()))
    return found


INLINE_SPAN = re.compile(r"`([^`]+)`")


def inline_spans(doc, failures):
    """Inline code spans that hold an `aws` command: each must be on one line; returns them."""
    found = []
    lines = dict(doc.prose)
    numbers = [n for n, _ in doc.prose]
    # Join consecutive prose lines into paragraphs to see spans that wrap.
    paragraph, first = [], None
    for n in numbers + [None]:
        if n is not None and (not paragraph or n == first + len(paragraph)) and lines[n].strip():
            if first is None:
                first = n
            paragraph.append(lines[n])
            continue
        text = "\n".join(paragraph)
        for m in INLINE_SPAN.finditer(text):
            span = m.group(1)
            if not span.startswith("aws "):
                continue
            line = first + text.count("\n", 0, m.start())
            if "\n" in span:
                failures.add(
                    "%s:%d" % (doc.path, line),
                    "an `aws` command in an inline code span wraps onto the next line; put it "
                    "in a fenced block: `%s`" % span.replace("\n", " "),
                )
            elif " --" in span:
                # A span with a flag is a command; without one it names a command in prose.
                found.append((line, span))
        paragraph, first = [], None
        if n is not None and lines[n].strip():
            paragraph, first = [lines[n]], n
    return found


# ---------------------------------------------------------------------------------------------
# Static rules


FILE_USE = re.compile(r"fileb?://([A-Za-z0-9_.-]+)|\$\(cat ([A-Za-z0-9_.-]+)\)|-sign ([A-Za-z0-9_.-]+)")


def file_written_before(text, name, position):
    before = text[:position]
    n = re.escape(name)
    patterns = [
        r"-out(?:file)?\s+" + n + r"\b",
        r">\s*" + n + r"\b",
        r"\bzip\s+(?:-j\s+)?" + n + r"\b",
        r"\bas\s+`" + n + "`",
    ]
    return any(re.search(p, before) for p in patterns)


def check_files_written(doc, commands, failures):
    for number, command in commands:
        for m in FILE_USE.finditer(command):
            name = next(g for g in m.groups() if g)
            # The position of this command in the text: the start of its line.
            position = _offset_of_line(doc.text, number)
            if not file_written_before(doc.text, name, position):
                failures.add(
                    "%s:%d" % (doc.path, number),
                    "`%s` reads %s, which no earlier step writes or names" % (command[:60], name),
                )


def _offset_of_line(text, number):
    offset = 0
    for _ in range(number - 1):
        offset = text.index("\n", offset) + 1
    return offset


def teardown_names():
    with open(os.path.join(ROOT, "scripts/aws/lib.sh")) as f:
        lib = f.read()
    names = dict(re.findall(r"^([A-Z_]+)=([A-Za-z0-9_.:/-]+)$", lib, re.M))
    return {
        "iot create-policy": {names["IOT_POLICY"]},
        "iam create-policy": {names["IAM_POLICY"]},
        "iam create-role": {names["ROLE"]},
        "lambda create-function": {names["FUNCTION"]},
        "iot create-authorizer": {names["UNSIGNED_AUTHORIZER"], names["SIGNED_AUTHORIZER"]},
    }


NAME_FLAGS = {
    "iot create-policy": "--policy-name",
    "iam create-policy": "--policy-name",
    "iam create-role": "--role-name",
    "lambda create-function": "--function-name",
    "iot create-authorizer": "--authorizer-name",
}


def check_names(where, command, failures):
    known = teardown_names()
    for operation, flag in NAME_FLAGS.items():
        if command.startswith("aws " + operation + " "):
            m = re.search(re.escape(flag) + r"\s+(\S+)", command)
            if m and m.group(1) not in known[operation]:
                failures.add(
                    where,
                    "%s creates %r, which scripts/aws/teardown.sh does not remove (it removes %s)"
                    % (operation, m.group(1), ", ".join(sorted(known[operation]))),
                )


def check_binary_format(where, command, failures):
    if "--mqtt-context" in command and "--cli-binary-format raw-in-base64-out" not in command:
        failures.add(
            where,
            "--mqtt-context without --cli-binary-format raw-in-base64-out: AWS CLI v1 and v2 "
            "would send different passwords",
        )


# ---------------------------------------------------------------------------------------------
# Running commands against the dead endpoint


def dead_env(home):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLEDUMMYKEY0",
        "AWS_SECRET_ACCESS_KEY": "dummy-secret-access-key-for-the-check",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.path.join(home, "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "no-credentials"),
        "AWS_ENDPOINT_URL": DEAD_ENDPOINT,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return env


def substitute(command):
    """The command with placeholders replaced; raises KeyError naming an unknown placeholder."""

    def one(m):
        return PLACEHOLDERS[m.group(1)]

    return re.sub(r"<([A-Za-z][A-Za-z0-9 _-]*)>", one, command)


def for_cli_v1(command):
    return command.replace("--cli-binary-format raw-in-base64-out", "").replace("  ", " ")


def prepare_workdir(work):
    """The files the documents' commands read, with dummy content."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
    }
    for name in ("policy.json", "iam-policy.json"):
        with open(os.path.join(work, name), "w") as f:
            json.dump(policy, f)
    with open(os.path.join(work, "lambda-trust.json"), "w") as f:
        json.dump({"Version": "2012-10-17", "Statement": []}, f)
    with zipfile.ZipFile(os.path.join(work, "authorizer.zip"), "w") as z:
        z.write(os.path.join(ROOT, "scripts/example_authorizer.py"), "example_authorizer.py")
    with open(os.path.join(work, "authorizer-password"), "w") as f:
        f.write(DUMMY_PASSWORD + "\n")
    subprocess.run(
        ["openssl", "genrsa", "-out", "signing-key.pem", "2048"], cwd=work, check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "rsa", "-in", "signing-key.pem", "-pubout", "-out", "signing-key.pub.pem"],
        cwd=work, check=True, capture_output=True,
    )
    os.mkdir(os.path.join(work, "scripts"))
    shutil.copy(os.path.join(ROOT, "scripts/example_authorizer.py"), os.path.join(work, "scripts"))


def run_dead(command, work, debug=False):
    prelude = "".join("%s=%s; " % (k, _sh_quote(v)) for k, v in VARIABLES.items())
    script = "set -u; cd %s; %s%s%s" % (_sh_quote(work), prelude, command, " --debug" if debug else "")
    return subprocess.run(
        ["bash", "-c", script], env=dead_env(work), capture_output=True, text=True, timeout=60
    )


def run_dead_in_process(command, work):
    """run_dead without a new AWS CLI process per command: bash expands the command's words
    (quotes, variables, $(...)), then the CLI's own driver runs them in this process, which
    saves starting and importing the CLI each time. The result looks like run_dead's."""
    if not command.startswith("aws "):
        return run_dead(command, work)
    prelude = "".join("%s=%s; " % (k, _sh_quote(v)) for k, v in VARIABLES.items())
    script = "set -u; cd %s; %sprintf '%%s\\0' %s" % (_sh_quote(work), prelude, command[4:])
    words = subprocess.run(["bash", "-c", script], env=dead_env(work), capture_output=True,
                           timeout=60)
    if words.returncode != 0:
        return subprocess.CompletedProcess(command, words.returncode, "",
                                           words.stderr.decode(errors="replace"))
    argv = [w.decode() for w in words.stdout.split(b"\0")[:-1]]
    from awscli.clidriver import create_clidriver

    saved = dict(os.environ)
    env = dead_env(work)
    # Set by awscli when it is imported: where its own data files are.
    env["AWS_DATA_PATH"] = os.environ.get("AWS_DATA_PATH", "")
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(work)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = create_clidriver().main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(command, rc, out.getvalue(), err.getvalue())


def _sh_quote(value):
    return "'" + value.replace("'", "'\\''") + "'"


def check_connection_only(where, command, result, failures):
    err = result.stderr.strip()
    if result.returncode != 0 and CONNECTION_FAILURE in err:
        return True
    tail = "\n    ".join(err.splitlines()[-4:]) or "(no error output)"
    failures.add(where, "`%s` did not fail at the connection:\n    %s" % (command, tail))
    return False


# ---------------------------------------------------------------------------------------------
# Authorizer Lambdas


def load_lambda(source, name):
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module.lambda_handler


def example_authorizer_module():
    path = os.path.join(ROOT, "scripts/example_authorizer.py")
    module = types.ModuleType("example_authorizer")
    module.__file__ = path
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)
    return module


class Context:
    invoked_function_arn = VARIABLES["FUNCTION_ARN"]


def check_response_contract(where, response, failures):
    problems = []
    if not isinstance(response.get("isAuthenticated"), bool):
        problems.append("isAuthenticated is not a boolean")
    if not re.fullmatch(r"[a-zA-Z0-9]{1,128}", str(response.get("principalId", ""))):
        problems.append("principalId does not match ^[a-zA-Z0-9]{1,128}$")
    documents = response.get("policyDocuments")
    if not isinstance(documents, list) or len(documents) > 10:
        problems.append("policyDocuments is not a list of at most 10")
    else:
        for document in documents:
            if not isinstance(document, str):
                problems.append("a policyDocuments entry is a %s, not a JSON string"
                                % type(document).__name__)
                continue
            if len(document) > 2048:
                problems.append("a policy document is longer than 2048 characters")
            try:
                json.loads(document)
            except ValueError:
                problems.append("a policy document is not JSON")
    for key in ("disconnectAfterInSeconds", "refreshAfterInSeconds"):
        if not isinstance(response.get(key), int) or not 300 <= response[key] <= 86400:
            problems.append("%s is not in 300..86400" % key)
    for problem in problems:
        failures.add(where, "the authorizer Lambda's response breaks the contract: " + problem)


def event_from_request(body):
    """The event AWS IoT hands the Lambda for a test-invoke-authorizer request body."""
    event = {"protocols": ["tls", "mqtt"], "connectionMetadata": {"id": "check"},
             "signatureVerified": False}
    if "token" in body:
        event["token"] = body["token"]
        event["signatureVerified"] = bool(body.get("tokenSignature"))
    if "mqttContext" in body:
        mqtt = body["mqttContext"]
        event["protocolData"] = {"mqtt": {k: v for k, v in mqtt.items()}}
    return event


def request_body(debug_output):
    m = re.search(r"'body': (b'.*?'), 'url'", debug_output)
    if not m:
        return None
    return json.loads(ast.literal_eval(m.group(1)).decode())


def check_test_invoke(where, doc, command, work, failures):
    result = run_dead(for_cli_v1(command), work, debug=True)
    body = request_body(result.stderr)
    if body is None:
        failures.add(where, "no request body in the --debug output of `%s`" % command)
        return
    blocks = [src for _, src in doc.python_blocks() if "def lambda_handler" in src]
    env = {"EXAMPLE_AUTH_PASSWORD": DUMMY_PASSWORD, "EXAMPLE_AUTH_USERNAME": "demo-user",
           "AWS_REGION": REGION}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        handlers = [load_lambda(src, doc.path) for src in blocks] or [
            example_authorizer_module().lambda_handler]
        event = event_from_request(body)
        with contextlib.redirect_stdout(io.StringIO()):
            responses = [h(event, Context()) for h in handlers]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not any(r.get("isAuthenticated") is True for r in responses):
        failures.add(where, "the documented Lambda denies what `%s` sends (the event's mqtt: %s)"
                     % (command[:70], json.dumps(event.get("protocolData"))))


def check_doc_lambdas(doc, failures):
    for number, source in doc.python_blocks():
        if "def lambda_handler" not in source:
            continue
        where = "%s:%d" % (doc.path, number)
        handler = load_lambda(source, doc.path)
        allow_password = base64.b64encode(b"secret").decode()
        events = [
            {"protocolData": {"mqtt": {"username": "alice", "password": allow_password,
                                       "clientId": "test-1"}}},
            {"token": "allow", "signatureVerified": True},
            {"protocolData": {"mqtt": {"username": "mallory", "password": "d3Jvbmc=",
                                       "clientId": "test-1"}}},
        ]
        allowed = False
        for event in events:
            response = handler(event, Context())
            allowed |= response.get("isAuthenticated") is True
            check_response_contract(where, response, failures)
        if not allowed:
            failures.add(where, "the Lambda allows none of the documented credentials")


def check_example_authorizer_logs(failures):
    where = "scripts/example_authorizer.py"
    module = example_authorizer_module()
    password = base64.b64encode(b"demo-password").decode()
    event = {"protocolData": {"mqtt": {
        "username": "demo-user?x-amz-customauthorizer-name=a&x-amz-customauthorizer-signature=SIG",
        "password": password, "clientId": "test-1"}}, "token": "tok3n"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        response = module.lambda_handler(event, Context())
    log = out.getvalue()
    check_response_contract(where, response, failures)
    if "received" not in log or '"clientId": "test-1"' not in log:
        failures.add(where, "Lambda mode does not log the event it received:\n" + log)
    if "returned" not in log or json.dumps(response, sort_keys=True) not in log:
        failures.add(where, "Lambda mode does not log the response it returned:\n" + log)
    for secret in (password, "demo-password", "SIG", "tok3n"):
        if secret in log:
            failures.add(where, "Lambda mode logs a secret (%s...)" % secret[:3])


# ---------------------------------------------------------------------------------------------
# The scripts against moto


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(logdir):
    port = free_port()
    env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    log = open(os.path.join(logdir, "moto.log"), "w")
    process = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
    )
    url = "http://127.0.0.1:%d" % port
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return process, url
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("moto_server exited; see %s/moto.log" % logdir)
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("moto_server did not answer on %s" % url)


def moto_env(home, url, skipped_log):
    env = dead_env(home)
    del env["AWS_ENDPOINT_URL"]
    env.update({"SAMPLES_AWS_STAND_IN": "absent", "SAMPLES_AWS_SKIPPED_LOG": skipped_log})
    return env


def moto_client(url, service):
    import boto3  # installed with moto

    return boto3.client(service, endpoint_url=url, region_name=REGION,
                        aws_access_key_id="AKIDEXAMPLEDUMMYKEY0",
                        aws_secret_access_key="dummy-secret-access-key-for-the-check")


def inventory(url):
    """What the scripts can have created, as counts by kind (read with boto3: faster than one
    CLI process per list)."""
    iot, lam, iam = (moto_client(url, s) for s in ("iot", "lambda", "iam"))
    try:
        permissions = len(json.loads(
            lam.get_policy(FunctionName="example-authorizer")["Policy"])["Statement"])
    except lam.exceptions.ResourceNotFoundException:
        permissions = 0
    return {
        "IoT things": len(iot.list_things()["things"]),
        "IoT policies": len(iot.list_policies()["policies"]),
        "IoT certificates": len(iot.list_certificates()["certificates"]),
        "Lambda functions": len(lam.list_functions()["Functions"]),
        "Lambda permissions": permissions,
        "IAM roles": len(iam.list_roles()["Roles"]),
        "IAM customer policies": len(iam.list_policies(Scope="Local")["Policies"]),
        "IAM user policy attachments": len(
            iam.list_attached_user_policies(UserName="check-user")["AttachedPolicies"]),
    }


EXPECTED_AFTER_PROVISIONING = {
    "IoT things": 0,
    "IoT policies": 1,
    "IoT certificates": 1,
    "Lambda functions": 1,
    "Lambda permissions": 2,
    "IAM roles": 1,
    "IAM customer policies": 1,
    "IAM user policy attachments": 1,
}

SCRIPTS = [
    ("mtls-connect.sh", []),
    ("websocket-connect.sh", ["--user", "check-user"]),
    ("custom-auth-unsigned.sh", []),
    ("custom-auth-signed.sh", []),
]


def check_scripts(work, failures):
    url = None
    process, url = start_moto(work)
    try:
        skipped_log = os.path.join(work, "skipped-calls.txt")
        env = moto_env(work, url, skipped_log)
        moto_client(url, "iam").create_user(UserName="check-user")
        out_dir = os.path.join(work, "out")
        common = ["--region", REGION, "--yes", "--out-dir", out_dir, "--endpoint-url", url]

        for refusal, expected in (
            (["--yes", "--endpoint-url", url], "--region is required"),
            (["--region", REGION, "--endpoint-url", url], "--yes is required"),
        ):
            result = subprocess.run(["bash", "scripts/aws/mtls-connect.sh"] + refusal, cwd=ROOT,
                                    env=env, capture_output=True, text=True, timeout=120)
            if result.returncode == 0 or expected not in result.stderr:
                failures.add("scripts/aws/mtls-connect.sh", "ran without %s" % expected.split()[0])
        if inventory(url)["IoT certificates"] != 0:
            failures.add("scripts/aws/mtls-connect.sh", "created something while refusing to run")

        for round_ in (1, 2):
            # Run 1 takes the create paths of the authorizer calls moto lacks, run 2 (which
            # finds everything there) their update paths.
            env["SAMPLES_AWS_STAND_IN"] = "absent" if round_ == 1 else "present"
            for script, extra in SCRIPTS:
                where = "scripts/aws/%s (run %d)" % (script, round_)
                result = subprocess.run(
                    ["bash", "scripts/aws/" + script] + common + extra, cwd=ROOT, env=env,
                    capture_output=True, text=True, timeout=300,
                )
                last = result.stdout.strip().splitlines()[-1:] or [""]
                ok = result.returncode == 0 and last[0].startswith("cargo run -p ")
                print("%s %s: %s" % ("ok  " if ok else "FAIL", where, last[0]), flush=True)
                if not ok:
                    failures.add(where, "exit %d\n%s%s" % (result.returncode, result.stdout,
                                                          result.stderr[-3000:]))
                printed = result.stdout + result.stderr
                password_file = os.path.join(out_dir, "authorizer-password")
                if os.path.exists(password_file):
                    with open(password_file) as f:
                        if f.read().strip() in printed:
                            failures.add(where, "printed the authorizer password")
                if "PRIVATE KEY" in printed:
                    failures.add(where, "printed a private key")
                for name in ("private.pem.key", "device.pem.crt", "signing-key.pem",
                             "authorizer-password"):
                    path = os.path.join(out_dir, name)
                    if os.path.exists(path) and os.stat(path).st_mode & 0o077:
                        failures.add(where, "%s has mode %o, not 0600"
                                     % (name, os.stat(path).st_mode & 0o777))
            counts = inventory(url)
            if counts != EXPECTED_AFTER_PROVISIONING:
                failures.add("scripts/aws (after run %d)" % round_,
                             "moto holds %s, expected %s" % (counts, EXPECTED_AFTER_PROVISIONING))
            else:
                print("ok   after run %d moto holds exactly one of each: %s"
                      % (round_, json.dumps(counts)), flush=True)

        result = subprocess.run(["bash", "scripts/aws/teardown.sh"] + common, cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        env["SAMPLES_AWS_STAND_IN"] = "absent"
        if result.returncode != 0:
            failures.add("scripts/aws/teardown.sh", "exit %d\n%s" % (result.returncode,
                                                                    result.stderr[-3000:]))
        counts = inventory(url)
        if any(counts.values()):
            failures.add("scripts/aws/teardown.sh", "moto still holds %s" % counts)
        else:
            print("ok   scripts/aws/teardown.sh: moto is empty: %s" % json.dumps(counts), flush=True)
        if os.path.exists(out_dir):
            failures.add("scripts/aws/teardown.sh", "left %s" % os.listdir(out_dir))
        again = subprocess.run(["bash", "scripts/aws/teardown.sh"] + common, cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
        if again.returncode != 0:
            failures.add("scripts/aws/teardown.sh (run 2)", again.stderr[-2000:])

        # The calls moto lacks: as the scripts built them, against the dead endpoint.
        with open(skipped_log) as f:
            skipped = sorted({line.strip() for line in f if line.strip()})
        operations = sorted({" ".join(line.split()[:2]) for line in skipped})
        print("     calls moto lacks, checked against %s instead: %s"
              % (DEAD_ENDPOINT, ", ".join(operations)), flush=True)
        for line in skipped:
            command = "aws " + line
            result = run_dead_in_process(command, work)
            check_connection_only("scripts/aws (skipped on moto)", command[:90], result, failures)
        return len(skipped)
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------


def main():
    failures = Failures()
    docs = [Doc(p, open(os.path.join(ROOT, p)).read()) for p in tracked_markdown()]
    docs.append(Doc("scripts/example_authorizer.py (docstring)",
                    docstring_text("scripts/example_authorizer.py"), indented_commands=True))

    work = tempfile.mkdtemp(prefix="check-aws-commands-")
    try:
        prepare_workdir(work)
        jobs, local = [], []
        for doc in docs:
            commands = aws_commands(doc, failures)
            spans = inline_spans(doc, failures)
            check_files_written(doc, commands + spans, failures)
            check_doc_lambdas(doc, failures)
            for number, command in commands + spans:
                where = "%s:%d" % (doc.path, number)
                check_names(where, command, failures)
                check_binary_format(where, command, failures)
                try:
                    concrete = substitute(command)
                except KeyError as e:
                    failures.add(where, "unknown placeholder <%s> in `%s`: add a dummy value "
                                 "to PLACEHOLDERS in scripts/check_aws_commands.py"
                                 % (e.args[0], command))
                    continue
                if command.startswith(LOCAL_COMMANDS):
                    local.append(where)
                    continue
                jobs.append((where, doc, command, concrete))

        results = [(job, run_dead_in_process(for_cli_v1(job[3]), work)) for job in jobs]
        passed = 0
        for (where, doc, command, concrete), result in results:
            if check_connection_only(where, command, result, failures):
                passed += 1
            if "test-invoke-authorizer" in concrete:
                check_test_invoke(where, doc, concrete, work, failures)
        print("ok   %d of %d documented aws commands (in %d documents) failed only at the "
              "connection to %s" % (passed, len(jobs), len({j[1].path for j in jobs}),
                                    DEAD_ENDPOINT), flush=True)

        print("     not service calls, so not run: %d `aws configure` / `aws sso` commands (%s)"
              % (len(local), ", ".join(local)), flush=True)
        check_example_authorizer_logs(failures)
        if "--docs-only" in sys.argv[1:]:
            print("     --docs-only: the scripts in scripts/aws/ were not run against moto")
            skipped = -(len(SCRIPTS) * 2 + 1)
        else:
            skipped = check_scripts(work, failures)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = len(jobs) + 1 + len(SCRIPTS) * 2 + 1 + skipped
    failed = len(failures.items)
    print("%d passed, %d failed" % (max(total - failed, 0), failed))
    return 1 if failures.items else 0


if __name__ == "__main__":
    sys.exit(main())
