package coordinator

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The coordinators of one deployment share two secrets: the identity key
// (it signs worker certificates, function certificates and checkpoints, so
// clients see one coordinator whichever is active) and the master secret
// (function keys, state keys and the journals' keys derive from it). The
// first coordinator makes them; every other gets them from a peer that
// holds them, and only after each has verified the other's evidence under
// the coordinators' reference values (Config.PeerPolicy) and both were
// configured with the same genesis manifest. Each keeps them sealed on its
// own disk with its TEE's sealing key. See
// docs/adr/0007-coordinator-failover.md.

// deploymentKey is the key in bus.BucketCoord that names the deployment:
// its public identity key and genesis manifest hash. It is public and the
// host can change it; it only tells a new coordinator whether to make
// secrets or to ask a peer, and a coordinator whose sealed secrets do not
// match it refuses to start.
const deploymentKey = "deployment"

type deploymentRecord struct {
	IdentityKey ed25519.PublicKey `json:"identity_key"`
	GenesisHash string            `json:"genesis_sha256"`
}

// peerWait is how often a coordinator that waits for a peer asks again.
const peerWait = 2 * time.Second

// ErrOtherDeployment: this coordinator's sealed secrets belong to another
// deployment than the one on the bus.
var ErrOtherDeployment = errors.New("coordinator: the sealed state in the data directory belongs to another deployment than the one on NATS")

// openCoordBucket opens the coordinators' bucket (lease and deployment).
func openCoordBucket(ctx context.Context, st *bus.Stores) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := bus.RetryTransient(ctx, func(ctx context.Context) (err error) {
		kv, err = st.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bus.BucketCoord, Storage: jetstream.FileStorage, Replicas: max(st.Replicas, 1), History: 1,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", bus.BucketCoord, err)
	}
	return kv, nil
}

// obtainSecrets returns the coordinator's secrets: its sealed state if it
// has one, else new secrets if the deployment has none yet, else the
// secrets of an attested peer (it waits for one until ctx ends).
//
// A TEE that cannot seal (TDX: no measurement-bound key) keeps the secrets
// in memory only: such a coordinator gets them from a peer at every start,
// and if it made them (the deployment's first coordinator), they are lost
// when every coordinator has stopped.
func obtainSecrets(ctx context.Context, cfg *Config, kv jetstream.KeyValue, genesisHash string) (*state, error) {
	st, err := loadState(cfg.Dir, cfg.TEE)
	if errors.Is(err, tee.ErrNoSealKey) {
		cfg.Logger.Warn("coordinator: this TEE cannot seal (" + string(cfg.TEE.Kind()) + "): the deployment's secrets stay in memory only and come from a peer at every start; run at least two coordinators")
		err = errNoState
	}
	if err != nil && !errors.Is(err, errNoState) {
		return nil, err
	}
	rec, err := readDeployment(ctx, kv)
	if err != nil {
		return nil, err
	}
	if st != nil {
		pub := ed25519.NewKeyFromSeed(st.IdentitySeed).Public().(ed25519.PublicKey)
		if rec == nil {
			// A coordinator from before the deployment record, or a new
			// NATS: name the deployment after these secrets.
			return st, createDeployment(ctx, kv, deploymentRecord{IdentityKey: pub, GenesisHash: genesisHash})
		}
		if !pub.Equal(rec.IdentityKey) {
			return nil, fmt.Errorf("%w (sealed identity %x, deployment's %x)", ErrOtherDeployment, pub[:8], rec.IdentityKey[:8])
		}
		return st, nil
	}
	if rec == nil {
		st = newState()
		pub := ed25519.NewKeyFromSeed(st.IdentitySeed).Public().(ed25519.PublicKey)
		err := createDeployment(ctx, kv, deploymentRecord{IdentityKey: pub, GenesisHash: genesisHash})
		if err == nil {
			cfg.Logger.Info("coordinator: new deployment", "identity_key", fmt.Sprintf("%x", pub))
			return st, keepState(cfg, st)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
		// Another coordinator made the deployment first: join it.
	}
	if st, err = recoverFromPeer(ctx, cfg, kv, genesisHash); err != nil {
		return nil, err
	}
	return st, keepState(cfg, st)
}

// keepState seals st to the data directory, unless the TEE cannot seal.
func keepState(cfg *Config, st *state) error {
	if err := saveState(cfg.Dir, cfg.TEE, st); err != nil && !errors.Is(err, tee.ErrNoSealKey) {
		return err
	}
	return nil
}

func readDeployment(ctx context.Context, kv jetstream.KeyValue) (*deploymentRecord, error) {
	e, err := kv.Get(ctx, deploymentKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the deployment record: %w", err)
	}
	var rec deploymentRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || len(rec.IdentityKey) != ed25519.PublicKeySize {
		return nil, errors.New("the deployment record in NATS is malformed")
	}
	return &rec, nil
}

func createDeployment(ctx context.Context, kv jetstream.KeyValue, rec deploymentRecord) error {
	b, _ := json.Marshal(rec) // plain data: cannot fail
	_, err := kv.Create(ctx, deploymentKey, b)
	return err
}

// recoverFromPeer asks the coordinators that hold the secrets for them
// until one answers or ctx ends. When none has answered for
// recoveryAfter, it also asks the owner (recovery.go) and takes whichever
// answer comes first.
func recoverFromPeer(ctx context.Context, cfg *Config, kv jetstream.KeyValue, genesisHash string) (*state, error) {
	if cfg.Conn == nil {
		return nil, errors.New("coordinator: the deployment exists but this coordinator has no secrets and no connection to ask a peer")
	}
	logged := false
	start := time.Now()
	var reqID string
	var reqKey hpke.PrivateKey
	for {
		if reqID != "" {
			if st, err := recoveryAnswer(ctx, kv, reqID, reqKey); err == nil {
				cfg.Logger.Info("coordinator: received the deployment's secrets from the owner's recovery")
				return st, nil
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				cfg.Logger.Warn("coordinator: a recovery answer that does not open", "err", err)
			}
		} else if after := cmp.Or(cfg.RecoveryAfter, recoveryAfter); time.Since(start) >= after {
			var err error
			if reqID, reqKey, err = requestRecovery(ctx, cfg, kv, genesisHash); err != nil {
				cfg.Logger.Warn("coordinator: asking for recovery", "err", err)
			}
		}
		st, err := askPeer(ctx, cfg, genesisHash)
		if err == nil {
			cfg.Logger.Info("coordinator: received the deployment's secrets from an attested peer")
			return st, nil
		}
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == apierr.Forbidden {
			// A peer answered and refused us: waiting will not help.
			return nil, fmt.Errorf("coordinator: a peer refused to share the secrets: %w", err)
		}
		if !logged {
			cfg.Logger.Warn("coordinator: the deployment exists; waiting for a coordinator that holds its secrets (peer recovery)", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("coordinator: no peer shared the secrets: %w", context.Cause(ctx))
		case <-time.After(peerWait):
		}
	}
}

func askPeer(ctx context.Context, cfg *Config, genesisHash string) (*state, error) {
	k, err := seal.NewKeyPair()
	if err != nil {
		return nil, err
	}
	pub := seal.PublicKeyBytes(k)
	ev, err := cfg.TEE.Evidence(tee.BindReportData(wire.LabelPeerJoin, pub, []byte(genesisHash)))
	if err != nil {
		return nil, fmt.Errorf("getting evidence: %w", err)
	}
	var resp wire.PeerRecoverResponse
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := bus.Call(rctx, cfg.Conn, bus.SubjectPeerRecover, wire.PeerRecoverRequest{Evidence: ev, KeyExchange: pub, GenesisHash: genesisHash}, &resp); err != nil {
		return nil, err
	}
	// The giver must be a coordinator too: otherwise a host could hand us
	// secrets of its own and have us sign with them.
	rd := tee.BindReportData(wire.LabelPeerGive, pub, resp.IdentityKey, resp.Enc, resp.Sealed)
	if err := verifyPeer(cfg, resp.Evidence, rd); err != nil {
		return nil, fmt.Errorf("the answering peer's evidence: %w", err)
	}
	pt, err := seal.OpenFrom(k, []byte(wire.InfoPeerSecrets), resp.Enc, resp.Sealed)
	if err != nil {
		return nil, fmt.Errorf("opening the peer's secrets: %w", err)
	}
	st, err := parseState(pt)
	if err != nil {
		return nil, err
	}
	if !ed25519.NewKeyFromSeed(st.IdentitySeed).Public().(ed25519.PublicKey).Equal(resp.IdentityKey) {
		return nil, errors.New("the peer's secrets do not match the identity it stated")
	}
	return st, nil
}

// verifyPeer checks a peer coordinator's evidence against the
// coordinators' reference values and the report data it must bind.
func verifyPeer(cfg *Config, ev tee.Evidence, rd [tee.ReportDataSize]byte) error {
	claims, err := cfg.Verifier.Verify(ev, cfg.PeerPolicy)
	if err != nil {
		return err
	}
	return attest.Validate(claims, cfg.PeerPolicy, rd, cfg.Now())
}

// servePeers answers peers' requests for the secrets, in a queue group of
// every coordinator that holds them (the active one and the standbys).
func (c *Coordinator) servePeers(ctx context.Context, nc *nats.Conn) (*nats.Subscription, error) {
	return bus.Serve(ctx, nc, bus.SubjectPeerRecover, "cloister-coordinator-peers", 4, c.log, c.handlePeerRecover)
}

func (c *Coordinator) handlePeerRecover(_ context.Context, b []byte) (any, error) {
	var req wire.PeerRecoverRequest
	if err := json.Unmarshal(b, &req); err != nil || len(req.KeyExchange) == 0 {
		return nil, apierr.New(apierr.BadRequest, "malformed peer recovery request")
	}
	if subtle.ConstantTimeCompare([]byte(req.GenesisHash), []byte(c.genesisHash)) != 1 {
		c.log.Warn("refusing a peer configured with another genesis manifest", "its_genesis", short(req.GenesisHash))
		return nil, apierr.New(apierr.Forbidden, "the peer's genesis manifest %s is not this deployment's %s", short(req.GenesisHash), short(c.genesisHash))
	}
	rd := tee.BindReportData(wire.LabelPeerJoin, req.KeyExchange, []byte(req.GenesisHash))
	if err := verifyPeer(c.cfg, req.Evidence, rd); err != nil {
		c.log.Warn("refusing a peer whose evidence does not verify", "err", err)
		return nil, apierr.New(apierr.Forbidden, "peer evidence refused: %v", err)
	}
	pt, _ := json.Marshal(state{IdentitySeed: c.identity.Seed(), Master: c.master}) // a struct of byte slices: cannot fail
	enc, sealed, err := seal.SealTo(req.KeyExchange, []byte(wire.InfoPeerSecrets), pt)
	clear(pt)
	if err != nil {
		return nil, apierr.New(apierr.BadRequest, "sealing to the peer's key: %v", err)
	}
	ev, err := c.tee.Evidence(tee.BindReportData(wire.LabelPeerGive, req.KeyExchange, c.IdentityKey(), enc, sealed))
	if err != nil {
		return nil, fmt.Errorf("getting evidence: %w", err)
	}
	c.log.Info("shared the deployment's secrets with an attested peer coordinator")
	return wire.PeerRecoverResponse{Evidence: ev, IdentityKey: c.IdentityKey(), Enc: enc, Sealed: sealed}, nil
}

func newState() *state {
	st := &state{IdentitySeed: make([]byte, ed25519.SeedSize), Master: make([]byte, 32)}
	rand.Read(st.IdentitySeed)
	rand.Read(st.Master)
	return st
}
