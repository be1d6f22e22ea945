// Package tdx is the Intel TDX evidence backend. It asks the TDX module,
// through Linux configfs-tsm (github.com/google/go-configfs-tsm), for a
// version 4 ECDSA quote whose TD report carries 64 bytes of REPORT_DATA
// (Intel TDX DCAP Quote Generation Library and Quote Verification Library,
// rev 0.9, appendix A).
//
// It only produces evidence; verification (the PCK chain to Intel's root,
// TCB info, QE identity) and validation (MRTD, attributes, TCB) live in
// package attest.
package tdx

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cloister-faas/cloister/internal/tee"
)

const tsmProvider = "tdx_guest"

// Backend gets TDX quotes. It is safe for concurrent use.
type Backend struct {
	tsm  configfsi.Client
	mrtd []byte
}

// NewTSM returns a backend that reads quotes through configfs-tsm.
func NewTSM(c configfsi.Client) (*Backend, error) {
	b := &Backend{tsm: c}
	q, err := b.quote([tee.ReportDataSize]byte{})
	if err != nil {
		return nil, err
	}
	b.mrtd = q.GetTdQuoteBody().GetMrTd()
	return b, nil
}

// Kind reports tee.KindTDX.
func (b *Backend) Kind() tee.Kind { return tee.KindTDX }

// Measurement returns MRTD, the build-time measurement of the TD (48 bytes).
func (b *Backend) Measurement() []byte { return bytes.Clone(b.mrtd) }

// Evidence returns a fresh quote whose REPORT_DATA is reportData. Raw is
// the quote exactly as the quoting enclave produced it.
func (b *Backend) Evidence(reportData [tee.ReportDataSize]byte) (tee.Evidence, error) {
	resp, err := b.raw(reportData)
	if err != nil {
		return tee.Evidence{}, err
	}
	return tee.Evidence{Kind: tee.KindTDX, Raw: resp}, nil
}

func (b *Backend) raw(rd [tee.ReportDataSize]byte) ([]byte, error) {
	resp, err := report.Get(b.tsm, &report.Request{InBlob: rd[:]})
	if err != nil {
		return nil, fmt.Errorf("tdx: configfs-tsm report: %w", err)
	}
	if p := strings.TrimSpace(resp.Provider); p != tsmProvider {
		return nil, fmt.Errorf("tdx: configfs-tsm provider is %q, not %q: this is not a TDX guest", p, tsmProvider)
	}
	q, err := Parse(resp.OutBlob)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(q.GetTdQuoteBody().GetReportData(), rd[:]) {
		return nil, errors.New("tdx: the quote does not carry the requested REPORT_DATA")
	}
	return resp.OutBlob, nil
}

func (b *Backend) quote(rd [tee.ReportDataSize]byte) (*pb.QuoteV4, error) {
	raw, err := b.raw(rd)
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Parse decodes a raw version 4 quote.
func Parse(raw []byte) (*pb.QuoteV4, error) {
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx: parsing quote: %w", err)
	}
	v4, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("tdx: unsupported quote type %T", q)
	}
	return v4, nil
}

// SealKey always fails: TDX offers no key derivation bound to the TD's
// measurement. A coordinator that must persist secrets runs on SEV-SNP.
func (b *Backend) SealKey() ([]byte, error) {
	return nil, fmt.Errorf("%w: TDX has no measurement-bound key derivation", tee.ErrNoSealKey)
}
