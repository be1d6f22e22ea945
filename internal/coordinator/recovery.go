package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The owner-held recovery key covers the case where no coordinator with
// the secrets survives (MarbleRun's recovery). A coordinator configured
// with the owner's recovery public key (Config.RecoveryKey) keeps, in
// bus.BucketCoord, the deployment's secrets HPKE-sealed to it. A new
// coordinator that finds no peer asks for recovery: it writes its evidence
// (binding a one-time key and its genesis hash) as a recovery request. The
// owner, on a machine of their own, runs `cloister coordinator recover`
// (Recover): it verifies that evidence against the coordinators' reference
// values, opens the secrets with the private recovery key, and seals them
// to the requester's one-time key. The host sees only ciphertext; the
// secrets are in the clear only in the owner's process and in the TEE.
// docs/adr/0007-coordinator-failover.md.

const (
	recoveryKey        = "recovery"
	recoveryRequestKey = "recovery-request."
	recoveryAnswerKey  = "recovery-answer."
	// InfoRecoverySecrets is the HPKE info of the secrets sealed to the
	// owner's recovery key.
	InfoRecoverySecrets = "cloister/v1/coordinator-recovery-secrets"
	// recoveryAfter is how long a coordinator without secrets waits for a
	// peer before it asks for recovery as well.
	recoveryAfter = 10 * time.Second
)

// recoveryRecord is the secrets sealed to the owner's recovery key.
type recoveryRecord struct {
	Recipient   string            `json:"recipient"` // hex of the recovery public key
	IdentityKey ed25519.PublicKey `json:"identity_key"`
	Enc         []byte            `json:"enc"`
	Sealed      []byte            `json:"sealed"`
}

// RecoveryRequest is a coordinator's request for the secrets from the
// owner (bus.BucketCoord, recovery-request.ID): a peer recovery request.
type RecoveryRequest struct {
	ID string `json:"id"`
	wire.PeerRecoverRequest
	Time time.Time `json:"time"`
}

// ParseRecoveryPublicKey reads a recovery public key (hex, of a KEM seal
// supports: X-Wing for keys `cloister keys recovery` makes, X25519 for
// older ones).
func ParseRecoveryPublicKey(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("recovery public key: %w", err)
	}
	if err := seal.CheckPublicKey(b); err != nil {
		return nil, fmt.Errorf("recovery public key: %w", err)
	}
	return b, nil
}

// storeRecovery seals the secrets to the recovery key and keeps them in
// the bucket, unless they are there already for that key.
func (c *Coordinator) storeRecovery(ctx context.Context) error {
	pub := c.cfg.RecoveryKey
	if len(pub) == 0 {
		return nil
	}
	if e, err := c.kv.Get(ctx, recoveryKey); err == nil {
		var r recoveryRecord
		if json.Unmarshal(e.Value(), &r) == nil && r.Recipient == hex.EncodeToString(pub) && r.IdentityKey.Equal(c.IdentityKey()) {
			return nil
		}
	}
	pt, _ := json.Marshal(state{IdentitySeed: c.identity.Seed(), Master: c.master}) // a struct of byte slices: cannot fail
	enc, sealed, err := seal.SealTo(pub, []byte(InfoRecoverySecrets), pt)
	clear(pt)
	if err != nil {
		return fmt.Errorf("sealing the secrets to the recovery key: %w", err)
	}
	b, _ := json.Marshal(recoveryRecord{Recipient: hex.EncodeToString(pub), IdentityKey: c.IdentityKey(), Enc: enc, Sealed: sealed}) // plain data: cannot fail
	if _, err := c.kv.Put(ctx, recoveryKey, b); err != nil {
		return fmt.Errorf("storing the recovery record: %w", err)
	}
	c.log.Info("the deployment's secrets are sealed to the owner's recovery key", "recovery_key", hex.EncodeToString(pub)[:16])
	return nil
}

// requestRecovery writes this coordinator's recovery request, once, and
// returns its id and one-time key.
func requestRecovery(ctx context.Context, cfg *Config, kv jetstream.KeyValue, genesisHash string) (string, hpke.PrivateKey, error) {
	k, err := seal.NewKeyPair()
	if err != nil {
		return "", nil, err
	}
	pub := seal.PublicKeyBytes(k)
	ev, err := cfg.TEE.Evidence(tee.BindReportData(wire.LabelPeerJoin, pub, []byte(genesisHash)))
	if err != nil {
		return "", nil, fmt.Errorf("getting evidence: %w", err)
	}
	id := newInstance()
	b, _ := json.Marshal(RecoveryRequest{ID: id, PeerRecoverRequest: wire.PeerRecoverRequest{Evidence: ev, KeyExchange: pub, GenesisHash: genesisHash}, Time: cfg.Now().UTC()}) // plain data: cannot fail
	if _, err := kv.Put(ctx, recoveryRequestKey+id, b); err != nil {
		return "", nil, fmt.Errorf("writing the recovery request: %w", err)
	}
	cfg.Logger.Warn("coordinator: no peer holds the secrets; asked for recovery: the owner runs `cloister coordinator recover`", "request", id)
	return id, k, nil
}

// recoveryAnswer returns the secrets the owner sealed to request id's key,
// if they are there.
func recoveryAnswer(ctx context.Context, kv jetstream.KeyValue, id string, k hpke.PrivateKey) (*state, error) {
	e, err := kv.Get(ctx, recoveryAnswerKey+id)
	if err != nil {
		return nil, err
	}
	var a wire.PeerRecoverResponse
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, fmt.Errorf("malformed recovery answer: %w", err)
	}
	pt, err := seal.OpenFrom(k, []byte(wire.InfoPeerSecrets), a.Enc, a.Sealed)
	if err != nil {
		return nil, fmt.Errorf("opening the recovery answer: %w", err)
	}
	st, err := parseState(pt)
	clear(pt)
	if err != nil {
		return nil, err
	}
	if !ed25519.NewKeyFromSeed(st.IdentitySeed).Public().(ed25519.PublicKey).Equal(a.IdentityKey) {
		return nil, errors.New("the recovered secrets do not match the identity the answer states")
	}
	_ = kv.Delete(ctx, recoveryRequestKey+id) // best effort: the bucket's TTL removes them
	_ = kv.Delete(ctx, recoveryAnswerKey+id)  // best effort: the bucket's TTL removes them
	return st, nil
}

// Recovered is what Recover did for one request.
type Recovered struct {
	Request string
	Err     error
}

// Recover answers the pending recovery requests with the secrets sealed to
// the owner's recovery key: for each request whose evidence meets policy
// (the coordinators' reference values) and binds its key and the
// deployment's genesis hash, it seals the secrets to that key. It runs in
// the owner's process, with the private recovery key.
func Recover(ctx context.Context, kv jetstream.KeyValue, recoveryPriv []byte, policy attest.Policy, verifier *attest.Verifier, now time.Time) ([]Recovered, error) {
	dep, err := readDeployment(ctx, kv)
	if err != nil || dep == nil {
		return nil, fmt.Errorf("no deployment record in NATS: %v", err)
	}
	e, err := kv.Get(ctx, recoveryKey)
	if err != nil {
		return nil, fmt.Errorf("no recovery record in NATS (was a coordinator started with --recovery-key?): %w", err)
	}
	var r recoveryRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("malformed recovery record: %w", err)
	}
	recipient, err := hex.DecodeString(r.Recipient)
	if err != nil {
		return nil, fmt.Errorf("malformed recovery record: recipient: %w", err)
	}
	k, err := seal.ParsePrivateKey(recipient, recoveryPriv)
	if err != nil {
		return nil, errors.New("the recovery record is sealed to another recovery key")
	}
	pt, err := seal.OpenFrom(k, []byte(InfoRecoverySecrets), r.Enc, r.Sealed)
	if err != nil {
		return nil, fmt.Errorf("opening the recovery record: %w", err)
	}
	defer clear(pt)
	st, err := parseState(pt)
	if err != nil {
		return nil, err
	}
	id := ed25519.NewKeyFromSeed(st.IdentitySeed).Public().(ed25519.PublicKey)
	if !id.Equal(dep.IdentityKey) || !id.Equal(r.IdentityKey) {
		return nil, errors.New("the recovery record's secrets are not the deployment's")
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Recovered
	for key := range keys.Keys() {
		if !strings.HasPrefix(key, recoveryRequestKey) {
			continue
		}
		rid := strings.TrimPrefix(key, recoveryRequestKey)
		res := Recovered{Request: rid}
		res.Err = answerRecovery(ctx, kv, key, rid, pt, id, dep.GenesisHash, policy, verifier, now)
		out = append(out, res)
	}
	return out, nil
}

func answerRecovery(ctx context.Context, kv jetstream.KeyValue, key, id string, secrets []byte, identity ed25519.PublicKey, genesis string, policy attest.Policy, verifier *attest.Verifier, now time.Time) error {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return err
	}
	var req RecoveryRequest
	if err := json.Unmarshal(e.Value(), &req); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	if req.GenesisHash != genesis {
		return fmt.Errorf("the requester's genesis manifest %s is not the deployment's %s", short(req.GenesisHash), short(genesis))
	}
	claims, err := verifier.Verify(req.Evidence, policy)
	if err != nil {
		return fmt.Errorf("the requester's evidence: %w", err)
	}
	if err := attest.Validate(claims, policy, tee.BindReportData(wire.LabelPeerJoin, req.KeyExchange, []byte(req.GenesisHash)), now); err != nil {
		return fmt.Errorf("the requester's evidence: %w", err)
	}
	enc, sealed, err := seal.SealTo(req.KeyExchange, []byte(wire.InfoPeerSecrets), secrets)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(wire.PeerRecoverResponse{IdentityKey: identity, Enc: enc, Sealed: sealed}) // plain data: cannot fail
	_, err = kv.Put(ctx, recoveryAnswerKey+id, b)
	return err
}
