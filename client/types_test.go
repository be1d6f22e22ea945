package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The public types mirror internal ones that the server sends (or, for
// Policy, that verification takes). Each pair must have the same JSON: a
// field added to, renamed in or retyped in the internal type makes these
// tests fail instead of changing the public API silently.

// filler sets every exported field of a value to a distinct non-zero value,
// so that a field that one side drops, renames or retypes shows in the JSON.
type filler struct{ n int }

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
	errType  = reflect.TypeFor[error]()
)

func (f *filler) fill(v reflect.Value) {
	f.n++
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.Date(2026, 12, 7, 3, 4, 5, f.n, time.UTC)))
		return
	case v.Type() == rawType:
		v.SetBytes(fmt.Appendf(nil, `{"n":%d}`, f.n))
		return
	case v.Type() == errType:
		v.Set(reflect.ValueOf(fmt.Errorf("error %d", f.n)))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			f.fill(v.Index(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			f.fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		f.fill(k)
		f.fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", f.n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(f.n))
	}
}

// filled returns a new *T with every exported field set.
func filled[T any]() *T {
	v := new(T)
	(&filler{}).fill(reflect.ValueOf(v).Elem())
	return v
}

// reencode decodes b into a new value of dst's type, refusing unknown
// fields, and encodes it again.
func reencode(b []byte, dst any) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	v := reflect.New(reflect.TypeOf(dst).Elem()).Interface()
	if err := d.Decode(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// mirror is a public type and the internal type it mirrors.
type mirror struct {
	name             string
	public, internal any // typed nil pointers
	// asServed edits a filled internal value into what the server sends
	// (nil: as it is).
	asServed func(any)
}

var mirrors = []mirror{
	{"FunctionInfo", (*FunctionInfo)(nil), (*wire.FunctionInfo)(nil), nil},
	{"APIKey", (*APIKey)(nil), (*wire.APIKey)(nil), nil},
	{"NewAPIKey", (*NewAPIKey)(nil), (*wire.NewAPIKey)(nil), nil},
	{"Activation", (*Activation)(nil), (*wire.Activation)(nil), nil},
	{"StepRef", (*StepRef)(nil), (*wire.StepRef)(nil), nil},
	// A listing leaves the job out (async.Store.DeadLetters): DeadLetter
	// has no field for it.
	{"DeadLetter", (*DeadLetter)(nil), (*wire.DeadLetter)(nil), func(v any) {
		d := v.(*wire.DeadLetter)
		d.Job, d.JobBase64 = nil, nil
	}},
	{"Policy", (*Policy)(nil), (*attest.Policy)(nil), nil},
	{"Receipt", (*Receipt)(nil), (*receipt.Receipt)(nil), nil},
	{"SignedReceipt", (*SignedReceipt)(nil), (*receipt.Signed)(nil), nil},
	{"ResultClaims", (*ResultClaims)(nil), (*artoken.Claims)(nil), nil},
	{"ClusterStatus", (*ClusterStatus)(nil), (*wire.ClusterStatus)(nil), nil},
	{"Checkpoint", (*Checkpoint)(nil), (*ledger.Checkpoint)(nil), nil},
	{"SignedManifest", (*SignedManifest)(nil), (*wire.SignedManifest)(nil), nil},
	{"ManifestChange", (*ManifestChange)(nil), (*wire.ManifestChange)(nil), nil},
	{"Sequence", (*Sequence)(nil), (*wire.Sequence)(nil), nil},
	{"Trigger", (*Trigger)(nil), (*wire.Trigger)(nil), nil},
	{"Rule", (*Rule)(nil), (*wire.Rule)(nil), nil},
	{"Fired", (*Fired)(nil), (*wire.Fired)(nil), nil},
	{"Worker", (*Worker)(nil), (*certs.Worker)(nil), nil},
}

// fillLike returns a filled value of p's type (a typed nil pointer).
func fillLike(p any) any {
	v := reflect.New(reflect.TypeOf(p).Elem())
	(&filler{}).fill(v.Elem())
	return v.Interface()
}

// TestPublicJSON: each public type encodes exactly as the internal type it
// mirrors, both ways: what the server sends decodes into the public type
// without loss or unknown fields, and what a user builds decodes into the
// internal type without loss.
func TestPublicJSON(t *testing.T) {
	for _, m := range mirrors {
		t.Run(m.name, func(t *testing.T) {
			in := fillLike(m.internal)
			if m.asServed != nil {
				m.asServed(in)
			}
			want, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := reencode(want, m.public)
			if err != nil {
				t.Fatalf("the server's JSON does not decode into the public type: %v\n%s", err, want)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("internal → public:\ngot  %s\nwant %s", got, want)
			}

			want, err = json.Marshal(fillLike(m.public))
			if err != nil {
				t.Fatal(err)
			}
			got, err = reencode(want, m.internal)
			if err != nil {
				t.Fatalf("the public JSON does not decode into the internal type: %v\n%s", err, want)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("public → internal:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

// sameJSON fails unless got and want encode to the same JSON.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s:\ngot  %s\nwant %s", what, g, w)
	}
}

// TestConversions: the conversions at the boundary carry every field,
// nil stays nil, and a signed receipt converted to the public form and
// back has the same ledger entry.
func TestConversions(t *testing.T) {
	r := filled[receipt.Receipt]()
	sameJSON(t, "receiptFrom", receiptFrom(r), r)
	s := filled[receipt.Signed]()
	sameJSON(t, "signedReceiptFrom", signedReceiptFrom(s), s)
	sameJSON(t, "SignedReceipt.internal", signedReceiptFrom(s).internal(), s)
	chain := []*receipt.Signed{s, filled[receipt.Signed]()}
	sameJSON(t, "signedReceiptsFrom", signedReceiptsFrom(chain), chain)
	want, _ := s.Entry()
	if got, err := signedReceiptFrom(s).Entry(); err != nil || !bytes.Equal(got, want) {
		t.Errorf("Entry: got %s, %v; want %s", got, err, want)
	}
	ap := filled[attest.Policy]()
	sameJSON(t, "policyFrom", policyFrom(*ap), ap)
	p := filled[Policy]()
	sameJSON(t, "Policy.internal", p.internal(), p)
	cl := filled[artoken.Claims]()
	sameJSON(t, "claimsFrom", claimsFrom(cl), cl)
	w := filled[certs.Worker]()
	sameJSON(t, "workerFrom", workerFrom(w), w)
	cp := filled[ledger.Checkpoint]()
	sameJSON(t, "checkpointFrom", checkpointFrom(cp), cp)
	rep := filled[ledger.AuditReport]()
	sameJSON(t, "auditReportFrom", auditReportFrom(rep), rep)

	if receiptFrom(nil) != nil || signedReceiptFrom(nil) != nil || signedReceiptsFrom(nil) != nil || (*SignedReceipt)(nil).internal() != nil ||
		claimsFrom(nil) != nil || checkpointFrom(nil) != nil || auditReportFrom(nil) != nil || workerFrom(nil) != nil {
		t.Error("a nil value did not convert to nil")
	}
	// Policy keeps the difference between no list and an empty one.
	if q := policyFrom(attest.Policy{}); q.AllowTEE != nil || (Policy{AllowTEE: []string{}}).internal().AllowTEE == nil {
		t.Error("policy: nil and empty allow_tee differ in JSON, and the conversion lost the difference")
	}
}

// TestAuditProblem: a problem says what its internal form says, and
// errors.Is sees its class and its cause.
func TestAuditProblem(t *testing.T) {
	cause := errors.New("bad signature")
	p := AuditProblem{Class: ledger.ErrCheckFailed, Index: 7, Count: 2, Detail: "receipt", Err: cause}
	if got, want := p.Error(), ledger.Problem(p).Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(p, ledger.ErrCheckFailed) || !errors.Is(p, cause) {
		t.Errorf("errors.Is does not see the class and the cause of %v", p)
	}
}

// TestDecodesServerAnswers: the client's methods decode what the gateway
// sends, the internal types' JSON, without losing anything.
func TestDecodesServerAnswers(t *testing.T) {
	fi, key, nk := filled[wire.FunctionInfo](), filled[wire.APIKey](), filled[wire.NewAPIKey]()
	act, dl := filled[wire.Activation](), filled[wire.DeadLetter]()
	dl.Job, dl.JobBase64 = nil, nil // as listed
	st, seq := filled[wire.ClusterStatus](), filled[wire.Sequence]()
	tr, rule, fired := filled[wire.Trigger](), filled[wire.Rule](), filled[wire.Fired]()
	hist, change := filled[wire.ManifestHistory](), filled[wire.ManifestChange]()
	answers := map[string]any{
		"GET /v1/functions/f":          fi,
		"GET /v1/functions":            map[string]any{"functions": []any{fi}},
		"GET /v1/keys":                 map[string]any{"keys": []any{key}},
		"POST /v1/keys":                nk,
		"GET /v1/cluster":              st,
		"GET /v1/activations/a":        act,
		"GET /v1/activations":          map[string]any{"activations": []any{act}},
		"GET /v1/dead-letters":         map[string]any{"dead_letters": []any{dl}},
		"GET /v1/sequences/s":          seq,
		"GET /v1/triggers/t":           tr,
		"POST /v1/triggers/t/fire":     fired,
		"GET /v1/rules/r":              rule,
		"GET /v1/manifest/history":     hist,
		"PUT /v1/manifest":             change,
		"GET /v1/sequences":            map[string]any{"sequences": []any{seq}},
		"GET /v1/triggers":             map[string]any{"triggers": []any{tr}},
		"GET /v1/rules":                map[string]any{"rules": []any{rule}},
		"PUT /v1/triggers/t":           tr,
		"PUT /v1/rules/r":              rule,
		"DELETE /v1/keys/0123456789ab": key,
	}
	gw := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a) // a failed write fails the test's call
	})
	c, err := New(gw.URL, "clk_test", Policy{AllowTEE: []string{"sim"}, Measurements: []string{"00"}, SimRoots: []string{strings.Repeat("00", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() (any, error)
		want any
	}{
		{"Get", func() (any, error) { return c.Get(ctx, "f", 0) }, fi},
		{"List", func() (any, error) { return c.List(ctx) }, []any{fi}},
		{"APIKeys", func() (any, error) { return c.APIKeys(ctx, "") }, []any{key}},
		{"CreateAPIKey", func() (any, error) { return c.CreateAPIKey(ctx, APIKeyOptions{Scope: "invoke"}) }, nk},
		{"RevokeAPIKey", func() (any, error) { return c.RevokeAPIKey(ctx, "0123456789ab") }, key},
		{"ClusterStatus", func() (any, error) { return c.ClusterStatus(ctx) }, st},
		{"Activation", func() (any, error) { return c.Activation(ctx, "a") }, act},
		{"Activations", func() (any, error) { return c.Activations(ctx, 0, "") }, []any{act}},
		{"DeadLetters", func() (any, error) { return c.DeadLetters(ctx, 0, time.Time{}) }, []any{dl}},
		{"GetSequence", func() (any, error) { return c.GetSequence(ctx, "s") }, seq},
		{"Sequences", func() (any, error) { return c.Sequences(ctx) }, []any{seq}},
		{"GetTrigger", func() (any, error) { return c.GetTrigger(ctx, "t") }, tr},
		{"PutTrigger", func() (any, error) { return c.PutTrigger(ctx, Trigger{Name: "t"}) }, tr},
		{"Triggers", func() (any, error) { return c.Triggers(ctx) }, []any{tr}},
		{"FireTrigger", func() (any, error) { return c.FireTrigger(ctx, "t", nil) }, fired},
		{"GetRule", func() (any, error) { return c.GetRule(ctx, "r") }, rule},
		{"PutRule", func() (any, error) { return c.PutRule(ctx, Rule{Name: "r"}) }, rule},
		{"Rules", func() (any, error) { return c.Rules(ctx) }, []any{rule}},
		{"ManifestHistory", func() (any, error) { return c.ManifestHistory(ctx) }, hist.Manifests},
		{"SetManifest", func() (any, error) { return c.SetManifest(ctx, SignedManifest{Manifest: json.RawMessage(`{}`)}) }, change},
	} {
		got, err := tc.call()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		sameJSON(t, tc.name, got, tc.want)
	}
}
