# hello-py: an OpenWhisk-style Python action for Cloister (docs/python.md).
#
# main receives the request's JSON object as a dict and returns the
# response's JSON. `calls` counts the calls this instance has served: the
# platform starts every call from the function's clean snapshot, so it is
# always 1.
calls = 0


def main(params: dict) -> dict:
    global calls
    calls += 1
    name = params.get("name", "stranger")
    return {"greeting": f"Hello, {name}!", "calls": calls}
