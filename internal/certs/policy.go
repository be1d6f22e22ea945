package certs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Signature domains of invoker policies.
const (
	// DomainPolicy: the coordinator certifies a function's invoker policy.
	DomainPolicy = "cloister-policy-cert-v1\n"
	// DomainPolicyUpdate: a function's owner asks for a new policy.
	DomainPolicyUpdate = "cloister-policy-update-v1\n"
)

// Invoker policy kinds.
const (
	InvokersOwner = "owner" // the function's owner key only (the default)
	InvokersAny   = "any"   // anyone, signed or not, and plaintext calls
	InvokersKeys  = "keys"  // the listed caller keys only
)

// MaxInvokerKeys bounds a list of caller keys.
const MaxInvokerKeys = 256

// Invokers says who may invoke a function. Its JSON is "owner", "any", or
// a list of hex Ed25519 public keys (the form `cloister keys new` prints).
// The zero value means owner.
type Invokers struct {
	Kind string
	Keys []ed25519.PublicKey
}

// MarshalJSON encodes the policy as "owner", "any" or a list of hex keys.
func (i Invokers) MarshalJSON() ([]byte, error) {
	if i.kind() != InvokersKeys {
		return json.Marshal(i.kind())
	}
	hx := make([]string, len(i.Keys))
	for n, k := range i.Keys {
		hx[n] = hex.EncodeToString(k)
	}
	return json.Marshal(hx)
}

// UnmarshalJSON decodes and validates the policy.
func (i *Invokers) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*i = Invokers{Kind: s}
		return i.Validate()
	}
	var hx []string
	if err := json.Unmarshal(b, &hx); err != nil {
		return fmt.Errorf("invokers: want \"owner\", \"any\" or a list of hex Ed25519 public keys")
	}
	out := Invokers{Kind: InvokersKeys, Keys: make([]ed25519.PublicKey, len(hx))}
	for n, h := range hx {
		k, err := hex.DecodeString(h)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("invokers: %q is not a hex Ed25519 public key", h)
		}
		out.Keys[n] = k
	}
	*i = out
	return i.Validate()
}

func (i Invokers) kind() string {
	if i.Kind == "" {
		return InvokersOwner
	}
	return i.Kind
}

// Validate checks the kind and, for a list, that it has 1 to
// MaxInvokerKeys distinct keys.
func (i Invokers) Validate() error {
	switch i.kind() {
	case InvokersOwner, InvokersAny:
		if len(i.Keys) > 0 {
			return fmt.Errorf("invokers: %q takes no keys", i.kind())
		}
		return nil
	case InvokersKeys:
		if len(i.Keys) == 0 || len(i.Keys) > MaxInvokerKeys {
			return fmt.Errorf("invokers: a list has 1 to %d keys, not %d", MaxInvokerKeys, len(i.Keys))
		}
		seen := map[string]bool{}
		for _, k := range i.Keys {
			if len(k) != ed25519.PublicKeySize {
				return fmt.Errorf("invokers: a key of %d bytes", len(k))
			}
			if seen[string(k)] {
				return fmt.Errorf("invokers: key %x is listed twice", []byte(k))
			}
			seen[string(k)] = true
		}
		return nil
	default:
		return fmt.Errorf("invokers: %q is not owner, any or a list of keys", i.Kind)
	}
}

// Allows reports whether caller may invoke under the policy, where owner
// is the function's owner key. A nil caller is anonymous: a plaintext
// call, or a sealed request nobody signed.
func (i Invokers) Allows(caller, owner ed25519.PublicKey) bool {
	switch i.kind() {
	case InvokersAny:
		return true
	case InvokersOwner:
		return caller != nil && len(owner) == ed25519.PublicKeySize && bytes.Equal(caller, owner)
	case InvokersKeys:
		for _, k := range i.Keys {
			if caller != nil && bytes.Equal(caller, k) {
				return true
			}
		}
	}
	return false
}

// String names the policy for people: owner, any, or the number of keys.
func (i Invokers) String() string {
	if i.kind() == InvokersKeys {
		return strconv.Itoa(len(i.Keys)) + " keys"
	}
	return i.kind()
}

// CallerHash is the hex SHA-256 of a caller's public key, as receipts and
// bills name it ("" for an anonymous caller).
func CallerHash(caller ed25519.PublicKey) string {
	if caller == nil {
		return ""
	}
	h := sha256.Sum256(caller)
	return hex.EncodeToString(h[:])
}

// Policy is the coordinator's certificate of a function's invoker policy,
// which covers every version of the function. Version grows by one with
// each change, and never goes back, even across a delete; workers refuse a
// policy older than one they have seen. A policy of kind owner names the
// owner key it means.
type Policy struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Version   int       `json:"policy_version"`
	Invokers  Invokers  `json:"invokers"`
	OwnerKey  []byte    `json:"owner_key"`
	IssuedAt  time.Time `json:"issued_at"`
}

// OpenPolicy verifies and decodes a policy certificate.
func OpenPolicy(s Signed, coordinator ed25519.PublicKey) (*Policy, error) {
	var p Policy
	if err := Open(s, coordinator, DomainPolicy, &p); err != nil {
		return nil, fmt.Errorf("policy certificate: %w", err)
	}
	if p.Name == "" || p.Namespace == "" || p.Version < 1 || len(p.OwnerKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("policy certificate: %w: missing fields", ErrMalformed)
	}
	return &p, nil
}

// Allows reports whether caller may invoke under the certified policy.
func (p *Policy) Allows(caller ed25519.PublicKey) bool { return p.Invokers.Allows(caller, p.OwnerKey) }

// PolicyUpdate is a function owner's request for a new invoker policy,
// signed with the owner key under DomainPolicyUpdate. Version must be the
// current policy's plus one, so that an update cannot be replayed.
type PolicyUpdate struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Version   int       `json:"policy_version"`
	Invokers  Invokers  `json:"invokers"`
	Time      time.Time `json:"time"`
}

// OpenPolicyUpdate verifies an update under the owner's key and decodes it.
func OpenPolicyUpdate(s Signed, owner ed25519.PublicKey) (*PolicyUpdate, error) {
	var u PolicyUpdate
	if err := Open(s, owner, DomainPolicyUpdate, &u); err != nil {
		return nil, fmt.Errorf("policy update: %w", err)
	}
	if u.Name == "" || u.Namespace == "" || u.Version < 1 {
		return nil, fmt.Errorf("policy update: %w: missing fields", ErrMalformed)
	}
	return &u, nil
}
