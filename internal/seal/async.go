package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// AADLogs labels a function's stderr sealed to the caller under the
// response key, so logs and output can never be swapped.
const AADLogs = "cloister/v1/logs"

// AsyncInfo is the HPKE info of an asynchronous request to one function
// version. It differs from Info, so a request sealed for one path cannot be
// submitted on the other (the two paths remember nonces differently).
func AsyncInfo(ns, name string, version int, codeHash string) []byte {
	return joinInfo("cloister/v1/async-request", ns, name, strconv.Itoa(version), codeHash)
}

// SequenceStep is one resolved step of a sealed sequence request.
type SequenceStep struct {
	Name     string
	Version  int
	CodeHash string
}

// SequenceInfo is the HPKE info of a request to a sequence. It binds the
// namespace, the sequence name and every step (name, version, code hash), so
// no step can be swapped, dropped or added without the worker failing to
// open the request. The request is sealed to the first step's key.
func SequenceInfo(async bool, ns, seq string, steps []SequenceStep) []byte {
	label := "cloister/v1/sequence-request"
	if async {
		label = "cloister/v1/async-sequence-request"
	}
	parts := []string{ns, seq, strconv.Itoa(len(steps))}
	for _, s := range steps {
		parts = append(parts, s.Name, strconv.Itoa(s.Version), s.CodeHash)
	}
	return joinInfo(label, parts...)
}

func joinInfo(label string, parts ...string) []byte {
	b := []byte(label)
	for _, p := range parts {
		b = append(b, 0)
		b = append(b, p...)
	}
	return b
}

// LinkHash commits to the output of a sequence step that feeds the next
// step inside the worker. It is what the step's receipt names as its
// response and the next step's receipt as its request: an HMAC under the
// caller's response key, so it links the receipts without revealing
// anything about a plaintext that never left the TEE.
func LinkHash(responseKey []byte, step int, output []byte) string {
	m := hmac.New(sha256.New, responseKey)
	m.Write([]byte("cloister/v1/sequence-link"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(step))
	m.Write(n[:])
	m.Write(output)
	return hex.EncodeToString(m.Sum(nil))
}
