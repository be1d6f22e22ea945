// Package seal implements Cloister's end-to-end encryption between a client
// and the worker that runs its function, shared by the client SDK and the
// worker. It uses only the standard library: HPKE (RFC 9180, crypto/hpke)
// with MLKEM768-X25519 (X-Wing, post-quantum; docs/adr/0010) or, for
// function keys certified before it, DHKEM(X25519, HKDF-SHA256), with
// HKDF-SHA256 and AES-128-GCM; AES-GCM for responses and session messages
// under keys exported from the HPKE context (RFC 9180 §5.3); and Ed25519
// for the caller's signature inside the envelope (docs/authority.md).
//
// It must never log, return in errors, or persist any key or plaintext.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
)

// The HPKE ciphersuites of function keys (RFC 9180 identifiers). Both use
// HKDF-SHA256 and AES-128-GCM; they differ in the KEM.
var (
	// SuiteX25519 is DHKEM(X25519, HKDF-SHA256): the suite of every
	// function certificate issued before SuiteXWing, still served.
	SuiteX25519 = certs.Suite{KEM: 0x0020, KDF: 0x0001, AEAD: 0x0001}
	// SuiteXWing is MLKEM768-X25519 (X-Wing, draft-ietf-hpke-pq): a
	// post-quantum KEM (ML-KEM-768, FIPS 203) combined with X25519, so
	// that it is as strong as the stronger of the two.
	SuiteXWing = certs.Suite{KEM: 0x647a, KDF: 0x0001, AEAD: 0x0001}
	// DefaultSuite is the suite of new function keys.
	DefaultSuite = SuiteXWing
)

var (
	kemX25519 = hpke.DHKEM(ecdh.X25519())
	kemXWing  = hpke.MLKEM768X25519()
	kdf       = hpke.HKDFSHA256()
	aead      = hpke.AES128GCM()
)

// Public key sizes, which tell the two KEMs apart.
const (
	x25519PublicKeySize = 32
	xwingPublicKeySize  = 1216
)

// kemOf returns the KEM of a supported suite.
func kemOf(s certs.Suite) (hpke.KEM, error) {
	switch s {
	case SuiteX25519:
		return kemX25519, nil
	case SuiteXWing:
		return kemXWing, nil
	}
	return nil, fmt.Errorf("%w: kem %#04x, kdf %#04x, aead %#04x", ErrSuite, s.KEM, s.KDF, s.AEAD)
}

// kemFor returns the KEM whose public keys have pub's size.
func kemFor(pub []byte) (hpke.KEM, error) {
	switch len(pub) {
	case x25519PublicKeySize:
		return kemX25519, nil
	case xwingPublicKeySize:
		return kemXWing, nil
	}
	return nil, fmt.Errorf("%w: a public key of %d bytes", ErrMalformed, len(pub))
}

// publicKey decodes pub with the KEM its size names.
func publicKey(pub []byte) (hpke.PublicKey, error) {
	k, err := kemFor(pub)
	if err != nil {
		return nil, err
	}
	pk, err := k.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: public key", ErrMalformed)
	}
	return pk, nil
}

// CheckSuite reports whether s is a supported suite and pub a valid public
// key of its KEM: what a client checks in a function certificate before it
// seals to the key, so that the certificate's named suite is the one used.
func CheckSuite(s certs.Suite, pub []byte) error {
	k, err := kemOf(s)
	if err != nil {
		return err
	}
	if _, err := k.NewPublicKey(pub); err != nil {
		return fmt.Errorf("%w: the key is not a %#04x public key", ErrSuite, s.KEM)
	}
	return nil
}

// SuiteName names a suite for people.
func SuiteName(s certs.Suite) string {
	switch s {
	case SuiteX25519:
		return "X25519"
	case SuiteXWing:
		return "MLKEM768-X25519"
	}
	return fmt.Sprintf("unknown (kem %#04x)", s.KEM)
}

// Export contexts (RFC 9180 §5.3) for the keys derived from a request context.
const (
	exportResponse = "cloister/v1/response"
	exportSession  = "cloister/v1/session"
)

// Errors. Test with errors.Is. Their messages never include key material.
var (
	ErrDecrypt   = errors.New("seal: decryption failed (tampered, wrong key, or sealed to another function or version)")
	ErrMalformed = errors.New("seal: malformed message")
	ErrSuite     = errors.New("seal: unsupported ciphersuite")
	// ErrCallerSignature: a signed payload whose signature does not verify
	// for its caller key, this request and this function.
	ErrCallerSignature = errors.New("seal: the caller's signature does not verify for this request")
)

// Info returns the HPKE info string that binds a request to one function
// version and its code: "cloister/v1/request" 0 ns 0 name 0 version 0 codehash.
func Info(ns, name string, version int, codeHash string) []byte {
	b := []byte("cloister/v1/request")
	for _, p := range []string{ns, name, strconv.Itoa(version), codeHash} {
		b = append(b, 0)
		b = append(b, p...)
	}
	return b
}

// DeriveFunctionKey derives a function version's HPKE key pair of suite s
// from the coordinator's master secret (RFC 9180 DeriveKeyPair over an
// HKDF output whose info names the version and, for suites other than
// SuiteX25519, the KEM).
func DeriveFunctionKey(master []byte, s certs.Suite, ns, name string, version int, codeHash string) (hpke.PrivateKey, error) {
	k, err := kemOf(s)
	if err != nil {
		return nil, err
	}
	info := Info(ns, name, version, codeHash)
	if s != SuiteX25519 {
		info = binary.BigEndian.AppendUint16(append(info, 0), s.KEM)
	}
	ikm, err := hkdf.Key(sha256.New, master, nil, string(info), 32)
	if err != nil {
		return nil, err
	}
	return k.DeriveKeyPair(ikm)
}

// NewKeyPair generates an HPKE key pair of the default suite's KEM (X-Wing),
// for key exchanges: workers' key release, coordinators' peer recovery,
// recovery keys.
func NewKeyPair() (hpke.PrivateKey, error) { return kemXWing.GenerateKey() }

// ParsePrivateKey decodes the private key whose public key is pub (which
// names the KEM by its size), and checks that they match.
func ParsePrivateKey(pub, b []byte) (hpke.PrivateKey, error) {
	k, err := kemFor(pub)
	if err != nil {
		return nil, err
	}
	sk, err := k.NewPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: private key", ErrMalformed)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		return nil, fmt.Errorf("%w: the private key does not match its public key", ErrMalformed)
	}
	return sk, nil
}

// CheckPublicKey reports whether pub is a valid public key of a supported
// KEM.
func CheckPublicKey(pub []byte) error {
	_, err := publicKey(pub)
	return err
}

// PublicKeyBytes serializes a key pair's public key.
func PublicKeyBytes(k hpke.PrivateKey) []byte { return k.PublicKey().Bytes() }

// SealTo encrypts a one-shot message to a public key (single-shot HPKE
// Base mode), with the KEM the key's size names.
func SealTo(pub, info, plaintext []byte) (enc, ct []byte, err error) {
	pk, err := publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	enc, s, err := hpke.NewSender(pk, kdf, aead, info)
	if err != nil {
		return nil, nil, err
	}
	ct, err = s.Seal(nil, plaintext)
	return enc, ct, err
}

// OpenFrom decrypts a message made by SealTo.
func OpenFrom(k hpke.PrivateKey, info, enc, ct []byte) ([]byte, error) {
	r, err := hpke.NewRecipient(enc, k, kdf, aead, info)
	if err != nil {
		return nil, ErrDecrypt
	}
	pt, err := r.Open(nil, ct)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Payload is the plaintext inside every confidential request: a random
// nonce and the client's clock (for replay protection), the caller's
// identity and the input.
//
// Encoding, version 1 (anonymous): 1 | 16-byte nonce | int64 unix
// nanoseconds | input. Version 2 (signed by the caller): 2 | nonce | time
// | 32-byte Ed25519 public key | 64-byte signature | input, the signature
// made by SealRequest (see callerMessage).
type Payload struct {
	Nonce [16]byte
	Time  time.Time
	Input []byte
	// Caller and Signature are set in a payload that SealRequest signed
	// (version 2), and nil in an anonymous one. CheckCaller verifies them.
	Caller    ed25519.PublicKey
	Signature []byte
}

const (
	payloadHeader   = 1 + 16 + 8
	payloadSignedV2 = payloadHeader + ed25519.PublicKeySize + ed25519.SignatureSize
)

// NewPayload makes a payload with a fresh random nonce and the current time.
func NewPayload(input []byte, now time.Time) Payload {
	p := Payload{Time: now, Input: input}
	if _, err := rand.Read(p.Nonce[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return p
}

// Encode serializes the payload: version 2 if it carries a caller,
// version 1 if not.
func (p Payload) Encode() []byte {
	signed := p.Caller != nil
	n := payloadHeader
	if signed {
		n = payloadSignedV2
	}
	b := make([]byte, 0, n+len(p.Input))
	if signed {
		b = append(b, 2)
	} else {
		b = append(b, 1)
	}
	b = append(b, p.Nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Time.UnixNano()))
	if signed {
		b = append(b, p.Caller...)
		b = append(b, p.Signature...)
	}
	return append(b, p.Input...)
}

// DecodePayload parses an encoded payload. It does not verify the
// caller's signature: CheckCaller does.
func DecodePayload(b []byte) (Payload, error) {
	if len(b) < payloadHeader || (b[0] != 1 && b[0] != 2) || (b[0] == 2 && len(b) < payloadSignedV2) {
		return Payload{}, fmt.Errorf("%w: payload header", ErrMalformed)
	}
	var p Payload
	copy(p.Nonce[:], b[1:17])
	p.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[17:25])))
	p.Input = b[payloadHeader:]
	if b[0] == 2 {
		p.Caller = ed25519.PublicKey(b[payloadHeader : payloadHeader+ed25519.PublicKeySize])
		p.Signature = b[payloadHeader+ed25519.PublicKeySize : payloadSignedV2]
		p.Input = b[payloadSignedV2:]
	}
	return p, nil
}

// callerDomain separates caller signatures from every other signature.
const callerDomain = "cloister/v1/caller\n"

// CallerMessage is what a caller signs for a request with encapsulated key
// enc under info: see callerMessage. SealRequest signs it; it is exported
// for other implementations of the format.
func CallerMessage(info, enc []byte, p Payload) []byte { return callerMessage(info, enc, &p) }

// callerMessage is what a caller signs: the HPKE info (which names the
// function, its version and code, and the kind of call), the
// encapsulated key of this very request (so the signature cannot be moved
// to another request, and only the signer can read the answer, whose key
// comes from the same HPKE context), the nonce, the time and the hash of
// the input.
func callerMessage(info, enc []byte, p *Payload) []byte {
	h := sha256.Sum256(p.Input)
	b := make([]byte, 0, len(callerDomain)+8+len(info)+len(enc)+16+8+len(h))
	b = append(b, callerDomain...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(info)))
	b = append(b, info...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(enc)))
	b = append(b, enc...)
	b = append(b, p.Nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Time.UnixNano()))
	return append(b, h[:]...)
}

// CheckCaller verifies the caller's signature of a payload opened from a
// request with encapsulated key enc under info. An anonymous payload
// (no caller) passes: whether anonymous callers are allowed is the
// function's policy, not the envelope's.
func (p *Payload) CheckCaller(info, enc []byte) error {
	if p.Caller == nil {
		return nil
	}
	if len(p.Caller) != ed25519.PublicKeySize || !ed25519.Verify(p.Caller, callerMessage(info, enc, p), p.Signature) {
		return ErrCallerSignature
	}
	return nil
}

// ClientContext is the client's side of one sealed request.
type ClientContext struct {
	Enc        []byte
	Ciphertext []byte
	// ResponseKey decrypts the response. SessionKey is the session's
	// symmetric key when the request opens a session.
	ResponseKey, SessionKey []byte
}

// SealRequest seals p to a function's HPKE public key under info. With a
// caller key, p is signed first (version 2, see callerMessage), inside
// the envelope: only the function's worker sees who called.
//
// The KEM is the one pub's size names; CheckSuite checks it against the
// suite the function certificate names.
func SealRequest(pub, info []byte, p Payload, caller ed25519.PrivateKey, openSession bool) (*ClientContext, error) {
	pk, err := publicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("function public key: %w", err)
	}
	enc, s, err := hpke.NewSender(pk, kdf, aead, info)
	if err != nil {
		return nil, fmt.Errorf("setting up HPKE sender: %w", err)
	}
	p.Caller, p.Signature = nil, nil
	if caller != nil {
		p.Caller = caller.Public().(ed25519.PublicKey)
		p.Signature = ed25519.Sign(caller, callerMessage(info, enc, &p))
	}
	ct, err := s.Seal(nil, p.Encode())
	if err != nil {
		return nil, err
	}
	c := &ClientContext{Enc: enc, Ciphertext: ct}
	if c.ResponseKey, err = s.Export(exportResponse, 16); err != nil {
		return nil, err
	}
	if openSession {
		if c.SessionKey, err = s.Export(exportSession, 16); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ServerContext is the worker's side of one opened request.
type ServerContext struct {
	Payload                 []byte
	ResponseKey, SessionKey []byte
}

// OpenRequest opens a request sealed by SealRequest.
func OpenRequest(k hpke.PrivateKey, info, enc, ct []byte, openSession bool) (*ServerContext, error) {
	r, err := hpke.NewRecipient(enc, k, kdf, aead, info)
	if err != nil {
		return nil, ErrDecrypt
	}
	pt, err := r.Open(nil, ct)
	if err != nil {
		return nil, ErrDecrypt
	}
	sc := &ServerContext{Payload: pt}
	if sc.ResponseKey, err = r.Export(exportResponse, 16); err != nil {
		return nil, err
	}
	if openSession {
		if sc.SessionKey, err = r.Export(exportSession, 16); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

// AAD labels for symmetric messages, so a request can never be replayed as a
// response or the other way round.
const (
	AADRequest  = "cloister/v1/session-request"
	AADResponse = "cloister/v1/response"
)

// SealSymmetric encrypts with AES-GCM under key with a random nonce, binding
// label and aad: nonce(12) ‖ ciphertext.
func SealSymmetric(key []byte, label string, aad, plaintext []byte) ([]byte, error) {
	k, err := NewSymmetric(key)
	if err != nil {
		return nil, err
	}
	return k.Seal(label, aad, plaintext)
}

// OpenSymmetric reverses SealSymmetric.
func OpenSymmetric(key []byte, label string, aad, ct []byte) ([]byte, error) {
	k, err := NewSymmetric(key)
	if err != nil {
		return nil, err
	}
	return k.Open(label, aad, ct)
}

// Symmetric is a key of SealSymmetric and OpenSymmetric with its cipher
// set up once, for a key that serves many messages: a session's. It is
// safe for concurrent use.
type Symmetric struct{ aead cipher.AEAD }

// NewSymmetric sets up key (16 or 32 bytes) for AES-GCM.
func NewSymmetric(key []byte) (*Symmetric, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return &Symmetric{aead: g}, nil
}

// Seal is SealSymmetric under k.
func (k *Symmetric) Seal(label string, aad, plaintext []byte) ([]byte, error) {
	out := make([]byte, 12, 12+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, out[:12], plaintext, symmetricAAD(label, aad)), nil
}

// Open is OpenSymmetric under k.
func (k *Symmetric) Open(label string, aad, ct []byte) ([]byte, error) {
	if len(ct) < 12+k.aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := k.aead.Open(nil, ct[:12], ct[12:], symmetricAAD(label, aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// symmetricAAD joins a label and associated data unambiguously: labels are
// constants without NUL bytes, and a NUL ends the label.
func symmetricAAD(label string, aad []byte) []byte {
	b := make([]byte, 0, len(label)+1+len(aad))
	b = append(b, label...)
	b = append(b, 0)
	return append(b, aad...)
}

// DeriveAEAD returns AES-256-GCM under the key HKDF-SHA256 derives from
// secret for label: one key per purpose (a journal, a log) from one
// master secret.
func DeriveAEAD(secret []byte, label string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		return nil, err
	}
	return newGCM(k)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: key size", ErrMalformed)
	}
	return cipher.NewGCM(b)
}

// RequestHash is the hash of a sealed request as it crossed the network; it
// is what the receipt's request_sha256 names. Parts are length-prefixed.
func RequestHash(mode string, enc, ticket, ct []byte) string {
	h := sha256.New()
	for _, p := range [][]byte{[]byte(mode), enc, ticket, ct} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256Hex is hex(sha256(b)).
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Ticket is the state of a session, sealed under a key that every worker
// holding the function key can derive, so any worker can serve the session.
type Ticket struct {
	ID        []byte    `json:"id"`
	Key       []byte    `json:"key"`
	Namespace string    `json:"ns"`
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	CodeHash  string    `json:"code"`
	Expires   time.Time `json:"exp"`
	// Caller is the key that signed the session's opening request (nil:
	// opened anonymously). Every message of the session is that caller's:
	// only it holds the session key.
	Caller ed25519.PublicKey `json:"caller,omitempty"`
}

// TicketKey derives the session-ticket key from a function's private key.
func TicketKey(k hpke.PrivateKey) ([]byte, error) {
	b, err := k.Bytes()
	if err != nil {
		return nil, err
	}
	return hkdf.Key(sha256.New, b, nil, "cloister/v1/session-ticket", 16)
}

const ticketLabel = "cloister/v1/ticket"

// SealTicket encrypts a ticket.
func SealTicket(key []byte, t Ticket) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	return SealSymmetric(key, ticketLabel, nil, b)
}

// OpenTicket decrypts a ticket.
func OpenTicket(key, sealed []byte) (*Ticket, error) {
	b, err := OpenSymmetric(key, ticketLabel, nil, sealed)
	if err != nil {
		return nil, err
	}
	var t Ticket
	if err := json.Unmarshal(b, &t); err != nil || len(t.Key) != 16 {
		return nil, fmt.Errorf("%w: ticket", ErrMalformed)
	}
	return &t, nil
}
