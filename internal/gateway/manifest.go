package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// handleManifest registers the deployment-manifest routes:
// GET /v1/manifest (the current manifest, public: it is in the attestation),
// GET /v1/manifest/history, and PUT /v1/manifest (a signed change; needs a
// platform admin API key, and the coordinator checks the admin signature).
func (g *Gateway) handleManifest() {
	g.handle("GET /v1/manifest", noAuth, func(w http.ResponseWriter, r *http.Request, _ *Principal) error {
		doc, err := g.coordinatorDoc(r.Context())
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"manifest": doc.Manifest, "manifest_sha256": doc.ManifestHash})
		return nil
	})
	g.handle("GET /v1/attestation/token", noAuth, func(w http.ResponseWriter, r *http.Request, _ *Principal) error {
		var t wire.ResultToken
		if err := bus.Call(r.Context(), g.cfg.Conn, bus.SubjectResultToken, struct{}{}, &t); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, t)
		return nil
	})
	g.handle("GET /v1/manifest/history", noAuth, func(w http.ResponseWriter, r *http.Request, _ *Principal) error {
		var h wire.ManifestHistory
		if err := bus.Call(r.Context(), g.cfg.Conn, bus.SubjectManifestHistory, struct{}{}, &h); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, h)
		return nil
	})
	g.handle("PUT /v1/manifest", ScopeAdmin, func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		if err := p.needPlatform("changing the manifest (which also needs an admin signature)"); err != nil {
			return err
		}
		var sm wire.SignedManifest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&sm); err != nil || len(sm.Manifest) == 0 {
			return apierr.New(apierr.BadRequest, "body must be a signed manifest {\"manifest\": {...}, \"signatures\": [...]}")
		}
		var ch wire.ManifestChange
		if err := bus.Call(r.Context(), g.cfg.Conn, bus.SubjectManifestSet, sm, &ch); err != nil {
			return err
		}
		g.dropAttestation(true)
		writeJSON(w, http.StatusOK, ch)
		return nil
	})
}
