package bundle

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrSequenceSignature means a sequence definition's owner signature does
// not verify.
var ErrSequenceSignature = errors.New("bundle: sequence definition signature does not verify")

// SequenceStep is one step of a signed sequence definition: a function of
// the namespace and its version (0: the latest when invoked).
type SequenceStep struct {
	Name    string
	Version int
}

const sequenceDomain = "cloister-sequence-v1\n"

// sequenceMessage is what an owner signs for a sequence definition: the
// domain, then the sequence's name and each step's name, each with its
// length in front, and each step's version, so that no two definitions
// share a message. The namespace is not in it: the client checks that
// every step is a function signed by the same owner (see the client's
// sealSequence).
func sequenceMessage(name string, steps []SequenceStep) ([]byte, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: invalid sequence name %q", ErrManifest, name)
	}
	if len(steps) == 0 || len(steps) > 1<<16-1 {
		return nil, fmt.Errorf("%w: a sequence of %d steps", ErrManifest, len(steps))
	}
	msg := append([]byte(sequenceDomain), byte(len(name)))
	msg = append(msg, name...)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(steps)))
	for i, s := range steps {
		if !ValidName(s.Name) || s.Version < 0 || s.Version > 1<<31-1 {
			return nil, fmt.Errorf("%w: step %d: invalid function %q or version %d", ErrManifest, i+1, s.Name, s.Version)
		}
		msg = append(msg, byte(len(s.Name)))
		msg = append(msg, s.Name...)
		msg = binary.BigEndian.AppendUint32(msg, uint32(s.Version))
	}
	return msg, nil
}

// SignSequence signs a sequence definition with an owner key.
func SignSequence(owner ed25519.PrivateKey, name string, steps []SequenceStep) ([]byte, error) {
	msg, err := sequenceMessage(name, steps)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(owner, msg), nil
}

// VerifySequence checks an owner's signature of a sequence definition. It
// does not decide whether the signer is trusted.
func VerifySequence(signer ed25519.PublicKey, sig []byte, name string, steps []SequenceStep) error {
	msg, err := sequenceMessage(name, steps)
	if err != nil {
		return err
	}
	if len(signer) != ed25519.PublicKeySize || !ed25519.Verify(signer, msg, sig) {
		return ErrSequenceSignature
	}
	return nil
}
