// Package teetest provides fake SEV-SNP chips and TDX platforms for tests:
// evidence that is cryptographically real but signed by fake vendor keys,
// served through the same interfaces as the hardware (a /dev/sev-guest
// device and configfs-tsm). Verifiers accept it only when a policy pins the
// fake roots, so it can never pass for the real thing.
//
// It is for tests only; no production code imports it.
package teetest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"syscall"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"

	"crypto/x509"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
)

// SNPOptions describe a fake SEV-SNP guest on a fake chip.
type SNPOptions struct {
	Measurement    []byte // 48 bytes
	HostData       []byte // 32 bytes, optional
	ChipID         byte   // fills the 64-byte CHIP_ID
	TCB            kds.TCBParts
	Debug          bool
	MigrationAgent bool
	// Created is when the fake AMD certificates begin (their validity runs for years).
	Created time.Time
}

// SNPChip is a fake AMD chip whose reports are signed by go-sev-guest's
// fake AMD keys (ARK → ASK → VCEK).
type SNPChip struct {
	Opts   SNPOptions
	Signer *sevtest.AmdSigner
	certs  []byte
	secret [32]byte
}

// SNPProduct is the product line the fake chips claim.
const SNPProduct = "Milan"

// NewSNPChip makes a fake chip with its certificate chain.
func NewSNPChip(o SNPOptions) (*SNPChip, error) {
	if len(o.Measurement) != 48 {
		return nil, fmt.Errorf("teetest: measurement must be 48 bytes")
	}
	if o.Created.IsZero() {
		o.Created = time.Now().Add(-24 * time.Hour)
	}
	var hwid [abi.ChipIDSize]byte
	for i := range hwid {
		hwid[i] = o.ChipID
	}
	tcb, err := kds.ComposeTCBParts(o.TCB)
	if err != nil {
		return nil, err
	}
	b := &sevtest.AmdSignerBuilder{
		ProductName:      "Milan-B0",
		ArkCreationTime:  o.Created,
		AskCreationTime:  o.Created,
		AsvkCreationTime: o.Created,
		VcekCreationTime: o.Created,
		VlekCreationTime: o.Created,
		HWID:             hwid,
		TCB:              tcb,
		CSPID:            "cloister-test",
		VcekCustom:       sevtest.CertOverride{Extensions: sevtest.CustomExtensions(o.TCB, hwid[:], "", "Milan-B0")},
	}
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		return nil, err
	}
	signer.Product = &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_MILAN}
	certs, err := signer.CertTableBytes()
	if err != nil {
		return nil, err
	}
	c := &SNPChip{Opts: o, Signer: signer, certs: certs}
	rand.Read(c.secret[:])
	return c, nil
}

// unsignedReport lays out a version 2 ATTESTATION_REPORT for reportData.
func (c *SNPChip) unsignedReport(rd [64]byte) ([]byte, error) {
	base := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: rd[:]})
	r, err := abi.ReportToProto(base[:])
	if err != nil {
		return nil, err
	}
	tcb, _ := kds.ComposeTCBParts(c.Opts.TCB) // a fake chip: a test's TCB parts out of range read as 0
	r.Policy = abi.SnpPolicyToBytes(abi.SnpPolicy{Debug: c.Opts.Debug, MigrateMA: c.Opts.MigrationAgent, SMT: true})
	r.Measurement = append([]byte(nil), c.Opts.Measurement...)
	if len(c.Opts.HostData) == 32 {
		r.HostData = append([]byte(nil), c.Opts.HostData...)
	}
	r.ChipId = c.Signer.HWID[:]
	r.ReportedTcb, r.CurrentTcb, r.CommittedTcb, r.LaunchTcb = uint64(tcb), uint64(tcb), uint64(tcb), uint64(tcb)
	r.Vmpl = 0
	return abi.ReportToAbiBytes(r)
}

// Report returns a signed report for reportData.
func (c *SNPChip) Report(rd [64]byte) ([]byte, error) {
	raw, err := c.unsignedReport(rd)
	if err != nil {
		return nil, err
	}
	rr, ss, err := c.Signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(rr, ss, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// RootsPEM returns the fake ASK then ARK, for a policy's trusted_roots.
func (c *SNPChip) RootsPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Signer.Ask.Raw})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Signer.Ark.Raw}))
}

// Policy returns reference values that accept this chip's guest.
func (c *SNPChip) Policy() *attest.SNPPolicy {
	return &attest.SNPPolicy{
		Measurements: []string{hex.EncodeToString(c.Opts.Measurement)},
		Product:      SNPProduct,
		TrustedRoots: c.RootsPEM(),
	}
}

// Collateral returns what AMD's KDS would serve for this chip: the VCEK,
// the ASK/ARK chain and a CRL signed by the ARK, valid from now for a
// week, that revokes the ASK when revokeASK is set.
func (c *SNPChip) Collateral(now time.Time, revokeASK bool) (map[string]collateral.Response, error) {
	crl := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(7 * 24 * time.Hour)}
	if revokeASK {
		crl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: c.Signer.Ask.SerialNumber, RevocationTime: now.Add(-time.Minute)}}
	}
	der, err := x509.CreateRevocationList(rand.Reader, crl, c.Signer.Ark, c.Signer.Keys.Ark)
	if err != nil {
		return nil, fmt.Errorf("signing the fake ARK CRL: %w", err)
	}
	tcb, _ := kds.ComposeTCBParts(c.Opts.TCB) // as in the report
	m := map[string]collateral.Response{}
	add := func(url string, body []byte) { m[url] = collateral.Response{URL: url, Body: body} }
	add(c.Signer.Ask.CRLDistributionPoints[0], der)
	add(kds.ProductCertChainURL(abi.VcekReportSigner, SNPProduct), []byte(c.RootsPEM()))
	add(kds.VCEKCertURL(SNPProduct, c.Signer.HWID[:], kds.TCBVersion(tcb)), c.Signer.Vcek.Raw)
	return m, nil
}

// Device returns a fake /dev/sev-guest: go-sev-guest's mock device, with
// the response for each REPORT_DATA made on demand.
func (c *SNPChip) Device() client.Device {
	return &snpDevice{chip: c, inner: &sevtest.Device{
		ReportDataRsp: map[string]any{},
		Certs:         c.certs,
		Signer:        c.Signer,
		SevProduct:    c.Signer.Product,
	}}
}

type snpDevice struct {
	chip  *SNPChip
	inner *sevtest.Device
}

func (d *snpDevice) Open(path string) error   { return d.inner.Open(path) }
func (d *snpDevice) Close() error             { return d.inner.Close() }
func (d *snpDevice) Product() *spb.SevProduct { return d.inner.Product() }
func (d *snpDevice) program(rd [64]byte) error {
	raw, err := d.chip.unsignedReport(rd)
	if err != nil {
		return err
	}
	var resp labi.SnpReportRespABI
	copy(resp.Data[:], raw)
	d.inner.ReportDataRsp[hex.EncodeToString(rd[:])] = &sevtest.GetReportResponse{Resp: resp}
	return nil
}

func (d *snpDevice) Ioctl(command uintptr, req any) (uintptr, error) {
	if sreq, ok := req.(*labi.SnpUserGuestRequest); ok {
		switch r := sreq.ReqData.(type) {
		case *labi.SnpReportReqABI:
			if err := d.program(r.ReportData); err != nil {
				return 0, err
			}
		case *labi.SnpExtendedReportReq:
			if err := d.program(r.Data.ReportData); err != nil {
				return 0, err
			}
		case *labi.SnpDerivedKeyReqABI:
			// A key that depends on the chip and on what the guest mixes in.
			rsp := sreq.RespData.(*labi.SnpDerivedKeyRespABI)
			mac := hmac.New(sha256.New, d.chip.secret[:])
			fmt.Fprintf(mac, "%x %x %x", r.RootKeySelect, r.GuestFieldSelect, d.chip.Opts.Measurement) // a hash.Hash never fails a write
			copy(rsp.Data[:], mac.Sum(nil))
			return 0, nil
		}
	}
	return d.inner.Ioctl(command, req)
}

// TSM returns a fake configfs-tsm whose report provider is this chip.
func (c *SNPChip) TSM() configfsi.Client {
	return fakeTSM("sev_guest", func(inblob []byte) ([]byte, []byte, error) {
		var rd [64]byte
		copy(rd[:], inblob)
		rep, err := c.Report(rd)
		return rep, c.certs, err
	})
}

// fakeTSM builds a configfs-tsm report subsystem around gen, which answers
// (outblob, auxblob) for an inblob.
func fakeTSM(provider string, gen func(inblob []byte) ([]byte, []byte, error)) configfsi.Client {
	sub := &faketsm.ReportSubsystem{
		MakeEntry: func() *faketsm.ReportEntry {
			return &faketsm.ReportEntry{InAttrs: map[string]*faketsm.ReportAttributeState{
				"inblob": {}, "privlevel": {Value: []byte("0\n")},
			}}
		},
		CheckInAttr: func(_ *faketsm.ReportEntry, attr string, contents []byte) error {
			switch attr {
			case "inblob":
				if len(contents) > 64 {
					return syscall.EINVAL
				}
				return nil
			case "privlevel":
				return nil
			}
			return fmt.Errorf("unwritable attribute %q", attr)
		},
		ReadAttr: func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
			switch attr {
			case "provider":
				return []byte(provider + "\n"), nil
			case "outblob", "auxblob":
				in := e.InAttrs["inblob"]
				if in == nil || len(in.Value) == 0 {
					return nil, syscall.EINVAL
				}
				out, aux, err := gen(in.Value)
				if err != nil {
					return nil, err
				}
				if attr == "outblob" {
					return out, nil
				}
				return aux, nil
			case "privlevel_floor":
				return []byte("0\n"), nil
			}
			return nil, syscall.ENOENT
		},
		Random: rand.Reader,
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}
