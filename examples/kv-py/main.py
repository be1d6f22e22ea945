"""kv-py: notes and counters kept in the function's sealed state, through
cloister.state (docs/python.md, docs/state.md). Deploy it with
"capabilities": {"state": true}.

    {"op": "put",  "key": K, "value": V}  -> {"ok": true}
    {"op": "get",  "key": K}              -> {"value": V or null}
    {"op": "del",  "key": K}              -> {"deleted": bool}
    {"op": "list", "key": PREFIX}         -> {"keys": [...]}
    {"op": "incr", "key": K, "by": N}     -> {"value": N}: by compare-and-set,
                                             so concurrent calls lose no update
"""

from cloister import state


def incr(key: str, by: int) -> int:
    while True:
        old = state.get(key)
        new = str(int(old or "0") + by)
        if state.cas(key, old, new):  # old is None: only if still absent
            return int(new)


def main(params: dict) -> dict:
    op, key = params.get("op"), params.get("key", "")
    if op == "put":
        state.put(key, str(params["value"]))
        return {"ok": True}
    if op == "get":
        return {"value": state.get(key)}
    if op == "del":
        return {"deleted": state.delete(key)}
    if op == "list":
        return {"keys": state.list(key)}
    if op == "incr":
        return {"value": incr(key, int(params.get("by", 1)))}
    raise ValueError(f"unknown op {op!r}: want put, get, del, list or incr")
