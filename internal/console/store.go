package console

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloister-faas/cloister/client"
)

// keep holds p, which holds the key that opens its result: in memory, and
// in PendingDir (readable by the user only) when one is set. A duplicate
// submission keeps the first submission's file.
func (s *Server) keep(p *client.Pending) error {
	s.mu.Lock()
	if _, ok := s.pending[p.ActivationID]; !ok || !p.Duplicate {
		s.pending[p.ActivationID] = p
	}
	s.mu.Unlock()
	if s.cfg.PendingDir == "" {
		return nil
	}
	if err := os.MkdirAll(s.cfg.PendingDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", s.cfg.PendingDir, err)
	}
	path := filepath.Join(s.cfg.PendingDir, p.ActivationID+".json")
	if p.Duplicate {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the activation key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving the activation key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close() // the write's error is the one to return
		return fmt.Errorf("saving the activation key: %w", err)
	}
	return f.Close()
}

// pendingFor returns the kept Pending of activation id, or nil.
func (s *Server) pendingFor(id string) *client.Pending {
	s.mu.Lock()
	p := s.pending[id]
	s.mu.Unlock()
	if p != nil || s.cfg.PendingDir == "" || !validActivationID(id) {
		return p
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.PendingDir, id+".json"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("reading an activation key", "activation", id, "err", err)
		}
		return nil
	}
	var saved client.Pending
	if err := json.Unmarshal(b, &saved); err != nil || saved.ActivationID != id {
		s.log.Warn("an activation key file is unusable", "activation", id)
		return nil
	}
	s.mu.Lock()
	s.pending[id] = &saved
	s.mu.Unlock()
	return &saved
}

// checkpointPath is where the last verified checkpoint of the coordinator
// with identity key id is kept in dir: the file `cloister ledger verify`
// keeps (checkpoint-<first 8 bytes of the key, hex>.note).
func checkpointPath(dir string, id ed25519.PublicKey) string {
	return filepath.Join(dir, "checkpoint-"+hex.EncodeToString(id[:8])+".note")
}
