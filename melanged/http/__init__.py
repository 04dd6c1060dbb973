"""melanged's HTTP API: every remote operation of melange.operations over HTTP(S).

The routes, their parameters and their OpenAPI document are generated from the
declaration (melange.operations.OPERATIONS), never written per operation; each
request runs through melange.operations.run, the code the CLI and the socket run.
"""
