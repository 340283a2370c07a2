"""An HTTPS stand-in for AWS STS that verifies SigV4 with botocore's own signer (not the data plane's code).

argv: CERT KEY ACCESS_KEY_ID SECRET_ACCESS_KEY SESSION_TOKEN. Prints its port, then one JSON line per request
(the verdict). GetCallerIdentity answers with an ARN when the signature verifies, else an STS-style 403.
"""
import http.server
import json
import re
import ssl
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CERT, KEY, AKID, SECRET, TOKEN = sys.argv[1:6]
AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)


def verify(method, path, headers, body):
    m = AUTH.match(headers.get("Authorization", ""))
    if not m:
        return "IncompleteSignature", "no SigV4 Authorization header"
    akid, _date, region, service, signed, signature = m.groups()
    if akid != AKID:
        return "InvalidClientTokenId", "unknown access key id"
    if headers.get("X-Amz-Security-Token") != TOKEN:
        return "InvalidClientTokenId", "missing or wrong session token"
    names = signed.split(";")
    request = AWSRequest(
        method=method,
        url="https://" + headers["Host"] + path,
        data=body,
        headers={n: headers[n] for n in names},
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(AKID, SECRET, TOKEN), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != signature:
        return "SignatureDoesNotMatch", "signature does not match"
    return None, "verified"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, message = verify(self.command, self.path, self.headers, body)
        print(json.dumps({"code": code, "message": message, "auth": self.headers.get("Authorization", "")[:60]}), flush=True)
        if code is None:
            status = 200
            out = (
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/demo/riptides</Arn>"
                "<UserId>AROAEXAMPLE:riptides</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
                "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>"
                "</GetCallerIdentityResponse>"
            )
        else:
            status = 403
            out = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                f"<Code>{code}</Code><Message>{message}</Message></Error>"
                "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
            )
        data = out.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
