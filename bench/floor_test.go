package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
)

// BenchmarkFloor measures, in one run, the CPU per call of what each
// BenchmarkInvoke mode cannot do without, and so the best ratio to the
// native echo each mode could reach on this machine if it did nothing
// else: issue 19's goals set that ratio (docs/architecture.md, "The
// floor"). Each part is timed by the process's CPU (user and system, every
// goroutine and the GC), over b.N operations, with -conc clients where
// the part is a round trip:
//
//   - http: the native echo's round trip (client and server), the same
//     request as BenchmarkInvoke/native;
//   - bus: one request and its reply through an embedded NATS server over
//     in-process connections, as from the gateway to a worker in
//     `cloister up`, with a request and a reply of an invocation's sizes
//     (the reply carries a receipt);
//   - sign and verify: Ed25519 over a receipt's bytes, once each (the
//     worker signs, the client verifies);
//   - nonce: the replay nonce's write to the replay log (the sealed
//     modes);
//   - hpke: X-Wing sealing to a function key and opening (the client and
//     the worker), and the caller's signature of the request, made and
//     checked (sign and verify again).
//
// The floor of a mode is the sum of its parts; it leaves out the
// sandbox, the ledger, JSON, routing, the HTTP edge's own work beyond
// the echo's, and every allocation the parts do not make themselves, so
// each mode's real cost is above it. max-<mode> is the native echo's CPU
// over the floor: the throughput ratio a mode could reach at most.
func BenchmarkFloor(b *testing.B) {
	conc := max(*concurrency, 1)
	ctx := b.Context()
	n := b.N

	// http: the native echo.
	native := httptest.NewServer(http.HandlerFunc(nativeEcho))
	defer native.Close()
	hc := &http.Client{Transport: transport(conc), Timeout: time.Minute}
	httpOp := func(ctx context.Context) error {
		return nativeCall(ctx, hc, native.URL, "0123456789abcdef0123456789abcdef")
	}

	// bus: an embedded server, a worker's queue subscription and a
	// gateway's requests over in-process connections.
	srv, err := bus.StartServer(bus.ServerOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	gw, err := srv.Connect("floor-gateway")
	if err != nil {
		b.Fatal(err)
	}
	defer gw.Close()
	wk, err := srv.Connect("floor-worker")
	if err != nil {
		b.Fatal(err)
	}
	defer wk.Close()
	request, reply := make([]byte, 300), make([]byte, 2700) // a plaintext call's envelope; a reply with its receipt
	if _, err := wk.QueueSubscribe("floor.invoke", "workers", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		b.Fatal(err)
	}
	if err := wk.Flush(); err != nil {
		b.Fatal(err)
	}
	busOp := func(ctx context.Context) error {
		m, err := gw.RequestWithContext(ctx, "floor.invoke", request)
		if err == nil && len(m.Data) != len(reply) {
			err = fmt.Errorf("reply of %d bytes", len(m.Data))
		}
		return err
	}

	// nonce: the replay log of `cloister up` (ADR 0026).
	st, err := bus.OpenStores(ctx, gw, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	nonceOp := func(ctx context.Context) error {
		var n [16]byte
		rand.Read(n[:])
		return st.Replay.Add(ctx, bus.ReplayID(n[:]), []byte("0123456789abcdef"))
	}

	// sign, verify: a receipt's bytes.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	msg := bytes.Repeat([]byte("r"), 2400)
	sig := ed25519.Sign(key, msg)
	signOp := func(context.Context) error { ed25519.Sign(key, msg); return nil }
	verifyOp := func(context.Context) error {
		if !ed25519.Verify(pub, msg, sig) {
			return fmt.Errorf("signature does not verify")
		}
		return nil
	}

	// hpke: seal to an X-Wing function key and open.
	fk, err := seal.NewKeyPair()
	if err != nil {
		b.Fatal(err)
	}
	fpub, info := seal.PublicKeyBytes(fk), seal.Info("default", fnName, 1, "c0de")
	hpkeOp := func(context.Context) error {
		enc, ct, err := seal.SealTo(fpub, info, input)
		if err != nil {
			return err
		}
		pt, err := seal.OpenFrom(fk, info, enc, ct)
		if err == nil && !bytes.Equal(pt, input) {
			err = fmt.Errorf("opened %q", pt)
		}
		return err
	}

	parts := []struct {
		name string
		conc int
		op   func(context.Context) error
	}{
		{"http", conc, httpOp}, {"bus", conc, busOp}, {"nonce", conc, nonceOp},
		{"sign", 1, signOp}, {"verify", 1, verifyOp}, {"hpke", 1, hpkeOp},
	}
	cpu := map[string]float64{} // µs of CPU per operation
	b.ResetTimer()
	for _, p := range parts {
		if _, err := runLoad(ctx, min(n, 2*p.conc), p.conc, p.op); err != nil { // warm-up
			b.Fatalf("%s: %v", p.name, err)
		}
		before := processCPU()
		if _, err := runLoad(ctx, n, p.conc, p.op); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		cpu[p.name] = float64(processCPU()-before) / float64(time.Microsecond) / float64(n)
		b.ReportMetric(cpu[p.name], p.name+"-µs")
	}
	b.StopTimer()
	receipts := cpu["sign"] + cpu["verify"]
	floors := []struct {
		mode string
		µs   float64
	}{
		{"plaintext", cpu["http"] + cpu["bus"] + receipts},
		{"session", cpu["http"] + cpu["bus"] + receipts + cpu["nonce"]},
		{"hpke", cpu["http"] + cpu["bus"] + receipts + cpu["nonce"] + cpu["hpke"] + cpu["sign"] + cpu["verify"]},
	}
	for _, f := range floors {
		b.ReportMetric(f.µs, "floor-"+f.mode+"-µs")
		b.ReportMetric(cpu["http"]/f.µs, "max-"+f.mode)
	}
}
