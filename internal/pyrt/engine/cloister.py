"""Cloister's API for Python functions (frozen into the engine as cloister).

    from cloister import state

    def main(params):
        state.put("greeting", "hello")
        return {"greeting": state.get("greeting")}

state is the function's sealed key-value state (docs/state.md): it
outlives calls, unlike everything else a call changes, and belongs to the
function (every version of it), never to another. Every operation goes to
the host at once (there is no cache, no batching and no transaction). The
manifest must grant it ("capabilities": {"state": true}); without the
grant, and while the script's top level runs at deploy, every operation
raises StateDenied.

Keys are str: 1 to 512 bytes in UTF-8. Values are str (stored as UTF-8)
or bytes (bytes, bytearray or memoryview); the store keeps bytes, so get
decodes them as UTF-8 unless it is asked for bytes (binary=True). The
errors are StateError's subclasses below.
"""

import _cloister_state as _host

__all__ = [
    "state", "StateError", "StateDenied", "InvalidKey", "ValueTooLarge",
    "QuotaExceeded", "StateFailed",
]


class StateError(Exception):
    """An operation on cloister.state failed; code is the host's code
    (docs/reactor-abi.md)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class StateDenied(StateError, PermissionError):
    """The function has no state: the manifest does not grant it, or the
    script's top level is running at deploy."""


class InvalidKey(StateError, ValueError):
    """The key is empty, longer than 512 bytes, or not encodable as UTF-8."""


class ValueTooLarge(StateError, ValueError):
    """The value is over the platform's limit (256 KiB by default)."""


class QuotaExceeded(StateError):
    """The function's state would exceed its quota of keys or bytes."""


class StateFailed(StateError):
    """The state failed (integrity or availability). The platform fails the
    request whatever the script does with this exception."""


_NOT_FOUND = -1
_ERRORS = {
    -2: (InvalidKey, "invalid key: 1 to 512 bytes of UTF-8"),
    -3: (ValueTooLarge, "value too large"),
    -4: (QuotaExceeded, "the function's state quota (keys or bytes) is exhausted"),
    -5: (StateDenied, "not granted to this function (the manifest's capabilities.state), "
                      "and never available while the script's top level runs at deploy"),
    -7: (StateFailed, "the state failed (integrity or availability); the request fails"),
}


def _error(code):
    cls, message = _ERRORS.get(code, (StateError, f"the host answered code {code}"))
    return cls(f"cloister.state: {message}", code)


def _key(key, what="the key"):
    if not isinstance(key, str):
        raise TypeError(f"cloister.state: {what} must be a str, not {type(key).__name__}")
    try:
        # surrogateescape: a key list() returned always works again.
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidKey(f"cloister.state: {what} is not encodable as UTF-8", -2) from None


def _value(value, what="the value"):
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"cloister.state: {what} is not encodable as UTF-8") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cloister.state: {what} must be a str or bytes, not {type(value).__name__}")


def _check(r):
    """Returns the host's answer, or raises the error of its code."""
    if isinstance(r, int) and r < 0:
        raise _error(r)
    return r


class State:
    """The function's sealed key-value state. Use the instance
    cloister.state."""

    __slots__ = ()

    def get(self, key, default=None, *, binary=False):
        """Returns the value of key, as str (or as bytes if binary), or
        default if the key is absent. A value that is not UTF-8 raises
        ValueError unless binary."""
        v = _host.get(_key(key))
        if v == _NOT_FOUND:
            return default
        _check(v)
        if binary:
            return v
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"cloister.state: the value of {key!r} is not UTF-8 text; "
                             "read it with get(key, binary=True)") from None

    def put(self, key, value):
        """Sets key to value (str or bytes)."""
        _check(_host.put(_key(key), _value(value)))

    def delete(self, key):
        """Deletes key; returns whether it existed."""
        return _check(_host.delete(_key(key))) == 1

    def cas(self, key, expected, new):
        """Compare-and-set: if key's value is expected (None: the key is
        absent), sets it to new (None: deletes it), atomically. Returns
        whether it did. str and bytes compare as their UTF-8 bytes."""
        old = None if expected is None else _value(expected, "the expected value (or None)")
        value = None if new is None else _value(new, "the new value (or None)")
        return _check(_host.cas(_key(key), old, value)) == 1

    def list(self, prefix=""):
        """Returns the keys that start with prefix, sorted by their UTF-8
        bytes. (A key that is not UTF-8, written by a version of the
        function in another language, is decoded with surrogateescape,
        and works as a key as it is.)"""
        keys = _check(_host.list(_key(prefix, "the prefix")))
        return [k.decode("utf-8", "surrogateescape") for k in keys]

    def __repr__(self):
        return "<cloister.state>"


state = State()
