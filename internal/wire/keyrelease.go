package wire

import (
	"encoding/json"

	"github.com/cloister-faas/cloister/internal/seal"
)

// The formats below are what a worker and the coordinator must agree on
// for key release. They live here, not in either role's package, so that
// neither role imports the other.

// KeyRequestMessage is what a worker signs, with its certified signing
// key, to ask for a function key: the domain "cloister-fnkey-request-v1\n"
// and the request's JSON without its signature.
func KeyRequestMessage(req FunctionKeyRequest) []byte {
	req.Signature = nil
	b, _ := json.Marshal(req) // plain data: Marshal cannot fail
	return append([]byte("cloister-fnkey-request-v1\n"), b...)
}

// KeyReleaseInfo is the HPKE info (RFC 9180) under which the coordinator
// seals a function key to a worker's key-exchange key.
func KeyReleaseInfo(workerID, ns, name string, version int) []byte {
	return append([]byte("cloister/v1/key-release\x00"+workerID+"\x00"), seal.Info(ns, name, version, "")...)
}

// StateKeyReleaseInfo is the HPKE info under which a function's state key
// is sealed to a worker. It differs from KeyReleaseInfo so that neither
// sealed key can be passed off as the other.
func StateKeyReleaseInfo(workerID, ns, name string) []byte {
	return []byte("cloister/v1/state-key-release\x00" + workerID + "\x00" + ns + "\x00" + name)
}
