package coordinator

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/journal"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The control journal holds what every coordinator must agree on besides
// the ledger and the state: the manifest history and the admitted
// workers. The active coordinator appends a record before it answers; the
// standbys apply the records as they follow, so that the one that takes
// over knows every manifest change and every worker admitted
// (threat-model gap 14). A record is JSON, sealed by the journal.
type controlRecord struct {
	// Kind is "genesis" (a manifest history begins), "manifest" (a signed
	// change), "admit" (a worker certificate) or "lead" (a coordinator took
	// over: recording it fences every earlier writer at once, see
	// internal/journal).
	Kind string `json:"kind"`
	// Lead is who took over.
	Lead *LeaseHolder `json:"lead,omitempty"`
	// Genesis is the first manifest's document.
	Genesis json.RawMessage `json:"genesis,omitempty"`
	// Signed is a manifest change; Revoked maps the workers it revoked
	// to their certificates' hashes, as the active coordinator decided,
	// so that replay does not depend on the time it runs at.
	Signed  *wire.SignedManifest `json:"signed,omitempty"`
	Revoked map[string]string    `json:"revoked,omitempty"`
	// Admit is an admitted worker, with the evidence it was admitted on:
	// a coordinator that takes over re-checks it at the next manifest
	// change.
	Admit *admitRecord `json:"admit,omitempty"`
	// Policy is an invoker policy version certified (kind "policy").
	Policy *policyRecord `json:"policy,omitempty"`
}

// policyRecord is an invoker policy version the coordinator certified,
// and the owner update it certified (the SHA-256 of its signed body; empty
// for a deploy's policy).
type policyRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   int    `json:"version"`
	Update    string `json:"update,omitempty"`
}

type admitRecord struct {
	WorkerID    string       `json:"worker_id"`
	Certificate certs.Signed `json:"certificate"`
	NotAfter    time.Time    `json:"not_after"`
	Evidence    tee.Evidence `json:"evidence"`
	ReportData  []byte       `json:"report_data"`
}

func (c *Coordinator) openControl(ctx context.Context) (*journal.Journal, error) {
	return journal.Open(ctx, journal.Config{JS: c.js, Stream: bus.StreamControlJournal, Subject: bus.SubjectControlJournal,
		Replicas: c.replicas, Key: c.master, Label: "cloister/v1/journal/control", Apply: c.applyControl})
}

// appendControl makes rec durable in the control journal and applies it.
// Callers hold c.mu.
func (c *Coordinator) appendControl(ctx context.Context, rec controlRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := c.control.Append(ctx, b); err != nil {
		if errors.Is(err, journal.ErrFenced) {
			c.fence()
		}
		return fmt.Errorf("recording in the control journal: %w", err)
	}
	return c.applyControlLocked(rec)
}

func (c *Coordinator) applyControl(_ uint64, b []byte) error {
	var rec controlRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("malformed control record: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applyControlLocked(rec)
}

func (c *Coordinator) applyControlLocked(rec controlRecord) error {
	switch rec.Kind {
	case "genesis":
		var m Manifest
		if err := strictjson.Unmarshal(rec.Genesis, &m); err != nil {
			return fmt.Errorf("genesis manifest: %w", err)
		}
		c.history = []wire.SignedManifest{{Manifest: rec.Genesis}}
		c.setManifest(m, rec.Genesis)
		// Certificates of an earlier history name its manifests: their
		// workers admit again.
		clear(c.workers)
		clear(c.revoked)
		clear(c.seen)
	case "manifest":
		if rec.Signed == nil {
			return errors.New("manifest record without a manifest")
		}
		m, err := checkSuccessor(c.m, hex.EncodeToString(c.mhash[:]), *rec.Signed)
		if err != nil {
			return fmt.Errorf("manifest record: %w", err)
		}
		c.history = append(c.history, *rec.Signed)
		c.setManifest(m, rec.Signed.Manifest)
		for id, h := range rec.Revoked {
			delete(c.workers, id)
			delete(c.seen, id)
			c.revoked[id] = h
		}
	case "admit":
		a := rec.Admit
		if a == nil || len(a.ReportData) != tee.ReportDataSize {
			return errors.New("malformed admit record")
		}
		w := admitted{signed: a.Certificate, notAfter: a.NotAfter, certHash: seal.SHA256Hex(a.Certificate.Body),
			reportData: [tee.ReportDataSize]byte(a.ReportData), evidence: a.Evidence}
		if claims, err := c.verifier.Verify(a.Evidence, c.m.Workers); err == nil {
			w.claims = claims
		} else {
			// Its certificate stays valid; a manifest change would revoke
			// it, as it cannot be re-checked.
			c.log.Warn("an admitted worker's evidence does not verify here", "worker", a.WorkerID, "err", err)
		}
		c.workers[a.WorkerID] = w
		delete(c.revoked, a.WorkerID)
		if _, ok := c.seen[a.WorkerID]; !ok || c.now().After(c.seen[a.WorkerID]) {
			c.seen[a.WorkerID] = c.now()
		}
	case "policy":
		p := rec.Policy
		if p == nil || p.Version < 1 {
			return errors.New("malformed policy record")
		}
		id := p.Namespace + "/" + p.Name
		c.policyMax[id] = max(c.policyMax[id], p.Version)
		if p.Update != "" {
			c.policyUpdates[p.Update] = true
		}
	case "lead":
	default:
		return fmt.Errorf("unknown control record %q", rec.Kind)
	}
	return nil
}

// leadControl catches the control journal up and makes sure it begins
// with the configured genesis manifest: on a first start it records the
// genesis (and the history an earlier version kept on disk); if the
// deployment's history began with another genesis (this coordinator was
// configured anew), a new history begins, as it did on disk before.
func (c *Coordinator) leadControl(ctx context.Context, me LeaseHolder) error {
	if _, err := c.control.CatchUp(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seq, _ := c.control.Position()
	if err := c.appendControl(ctx, controlRecord{Kind: "lead", Lead: &me}); err != nil {
		return err
	}
	if seq > 0 && ManifestHash(c.history[0].Manifest) == c.genesisHash {
		return nil
	}
	if seq > 0 {
		c.log.Warn("the configured genesis manifest differs from the deployment's history; starting a new history",
			"configured", short(c.genesisHash), "history", short(ManifestHash(c.history[0].Manifest)))
	}
	if err := c.appendControl(ctx, controlRecord{Kind: "genesis", Genesis: c.genesisRaw}); err != nil {
		return err
	}
	if seq > 0 {
		return nil
	}
	// A data directory of an earlier version keeps its history on disk.
	hist, err := loadHistory(c.dir)
	if err != nil || len(hist) < 2 || ManifestHash(hist[0].Manifest) != c.genesisHash {
		return nil
	}
	for _, sm := range hist[1:] {
		if err := c.appendControl(ctx, controlRecord{Kind: "manifest", Signed: &sm}); err != nil {
			return err
		}
	}
	c.log.Info("moved the manifest history from the data directory into the control journal", "manifests", len(hist))
	return nil
}
