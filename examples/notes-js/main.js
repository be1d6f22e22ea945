// notes-js: notes and counters kept in the function's sealed state, through
// cloister.state (docs/js.md). Deploy it with "capabilities": {"state": true}.
//
//   {"op": "put",  "key": K, "value": V}  -> {"ok": true}
//   {"op": "get",  "key": K}              -> {"value": V or null}
//   {"op": "del",  "key": K}              -> {"deleted": bool}
//   {"op": "list", "key": PREFIX}         -> {"keys": [...]}
//   {"op": "incr", "key": K}              -> {"value": N}, by compare-and-set,
//                                            so concurrent calls lose no update
function main(p) {
  const s = cloister.state;
  switch (p.op) {
    case "put":
      s.put(p.key, String(p.value));
      return { ok: true };
    case "get":
      return { value: s.get(p.key) };
    case "del":
      return { deleted: s.delete(p.key) };
    case "list":
      return { keys: s.list(p.key ?? "") };
    case "incr":
      for (;;) {
        const old = s.get(p.key);
        const next = String(Number(old ?? "0") + 1);
        if (s.cas(p.key, old, next)) return { value: Number(next) };
      }
  }
  throw new Error("unknown op " + JSON.stringify(p.op) + ": want put, get, del, list or incr");
}
