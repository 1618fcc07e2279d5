"""Python's ssl + http.client mTLS client. Usage: python_ssl.py HOST PORT CERT KEY CA"""
import http.client
import ssl
import sys

host, port, cert, key, ca = sys.argv[1:6]
context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
context.load_cert_chain(certfile=cert, keyfile=key)
connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
try:
    connection.request("GET", "/")
    response = connection.getresponse()
    print(f"status={response.status}")
    print(f"tls={connection.sock.version()}")
    print(response.read().decode())
except (ssl.SSLError, OSError) as error:
    print(f"request failed: {error}", file=sys.stderr)
    sys.exit(1)
