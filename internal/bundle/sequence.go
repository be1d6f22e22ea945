package bundle

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sequence signature errors. Test with errors.Is.
var (
	// ErrSequenceSignature means a sequence definition's owner signature
	// does not verify.
	ErrSequenceSignature = errors.New("bundle: sequence definition signature does not verify")
	// ErrSequenceUnbound means the signature verifies only as a legacy
	// (cloister-sequence-v1) signature, which does not cover the
	// namespace: the owner signed the name and steps, but not where they
	// may be served.
	ErrSequenceUnbound = errors.New("bundle: sequence definition is signed without its namespace")
)

// SequenceStep is one step of a signed sequence definition: a function of
// the namespace and its version (0: the latest when invoked).
type SequenceStep struct {
	Name    string
	Version int
}

const (
	sequenceDomain       = "cloister-sequence-v2\n"
	legacySequenceDomain = "cloister-sequence-v1\n"
)

// sequenceMessage is what an owner signs for a sequence definition: the
// domain, the namespace, the sequence's name and each step's name, each
// with its length in front, and each step's version, so that no two
// definitions share a message. The legacy (v1) message is the same
// without the namespace.
func sequenceMessage(ns, name string, steps []SequenceStep, legacy bool) ([]byte, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: invalid sequence name %q", ErrManifest, name)
	}
	if len(steps) == 0 || len(steps) > 1<<16-1 {
		return nil, fmt.Errorf("%w: a sequence of %d steps", ErrManifest, len(steps))
	}
	if !legacy && !ValidName(ns) {
		return nil, fmt.Errorf("%w: invalid namespace %q", ErrManifest, ns)
	}
	var msg []byte
	if legacy {
		msg = []byte(legacySequenceDomain)
	} else {
		msg = append([]byte(sequenceDomain), byte(len(ns)))
		msg = append(msg, ns...)
	}
	msg = append(msg, byte(len(name)))
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

// SignSequence signs a sequence definition for namespace ns with an owner
// key.
func SignSequence(owner ed25519.PrivateKey, ns, name string, steps []SequenceStep) ([]byte, error) {
	msg, err := sequenceMessage(ns, name, steps, false)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(owner, msg), nil
}

// VerifySequence checks an owner's signature of a sequence definition
// served in namespace ns. It returns an error wrapping ErrSequenceUnbound
// when sig is a legacy signature without the namespace that otherwise
// verifies, so that the caller decides whether to accept it, and
// ErrSequenceSignature when it does not verify at all. It does not decide
// whether the signer is trusted.
func VerifySequence(signer ed25519.PublicKey, sig []byte, ns, name string, steps []SequenceStep) error {
	msg, err := sequenceMessage(ns, name, steps, false)
	if err != nil {
		return err
	}
	if len(signer) != ed25519.PublicKeySize {
		return ErrSequenceSignature
	}
	if ed25519.Verify(signer, msg, sig) {
		return nil
	}
	if legacy, err := sequenceMessage(ns, name, steps, true); err == nil && ed25519.Verify(signer, legacy, sig) {
		return fmt.Errorf("%w (sign it again for namespace %q)", ErrSequenceUnbound, ns)
	}
	return ErrSequenceSignature
}
