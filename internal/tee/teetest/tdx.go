package teetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
)

// TDXOptions describe a fake TD on a fake Intel platform.
type TDXOptions struct {
	MRTD       []byte // 48 bytes
	MRConfigID []byte // 48 bytes, optional
	TEETCBSVN  []byte // 16 bytes; byte 1 must be 0 (no TDX module identity in the fake TCB info)
	Debug      bool
	PPID       byte // fills the 16-byte PPID in the PCK certificate
	Created    time.Time
}

// TDXPlatform is a fake Intel platform: a fake SGX root CA, PCK platform
// CA, PCK certificate and TCB signing certificate (all ECDSA P-256, with
// Intel's names and the SGX extensions copied from the real PCK
// certificate in go-tdx-guest's test data), a quoting enclave attestation
// key, and the PCS collateral for it.
type TDXPlatform struct {
	Opts TDXOptions

	root, inter, pck, tcbSigning             *x509.Certificate
	rootKey, interKey, pckKey, tcbSigningKey *ecdsa.PrivateKey
	attKey                                   *ecdsa.PrivateKey
	template                                 *pb.QuoteV4
	fmspc                                    string
}

const rootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

func intelName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"Intel Corporation"}, Locality: []string{"Santa Clara"},
		Province: []string{"CA"}, Country: []string{"US"}}
}

// NewTDXPlatform makes a fake platform.
func NewTDXPlatform(o TDXOptions) (*TDXPlatform, error) {
	if len(o.MRTD) != 48 || len(o.TEETCBSVN) != 16 || o.TEETCBSVN[1] != 0 {
		return nil, errors.New("teetest: MRTD must be 48 bytes, TEE_TCB_SVN 16 bytes with byte 1 zero")
	}
	if o.Created.IsZero() {
		o.Created = time.Now().Add(-24 * time.Hour)
	}
	q, err := abi.QuoteToProto(tdxtestdata.RawQuote)
	if err != nil {
		return nil, err
	}
	p := &TDXPlatform{Opts: o, template: q.(*pb.QuoteV4)}
	realChain := p.template.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	blk, _ := pem.Decode(realChain)
	realPCK, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ext, err := pcs.PckCertificateExtensions(realPCK)
	if err != nil {
		return nil, err
	}
	p.fmspc = ext.FMSPC
	sgx, err := sgxExtensionWithPPID(realPCK, o.PPID)
	if err != nil {
		return nil, err
	}
	// crypto/rand never fails (it crashes the program instead).
	gen := func() *ecdsa.PrivateKey { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }
	p.rootKey, p.interKey, p.pckKey, p.tcbSigningKey, p.attKey = gen(), gen(), gen(), gen(), gen()
	notAfter := o.Created.AddDate(5, 0, 0)
	mk := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62)) // as in gen
		tmpl.NotBefore, tmpl.NotAfter = o.Created, notAfter
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	if p.root, err = mk(&x509.Certificate{Subject: intelName("Intel SGX Root CA"), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, CRLDistributionPoints: []string{rootCRLURL}},
		nil, &p.rootKey.PublicKey, p.rootKey); err != nil {
		return nil, err
	}
	if p.inter, err = mk(&x509.Certificate{Subject: intelName("Intel SGX PCK Platform CA"), IsCA: true, BasicConstraintsValid: true,
		MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, CRLDistributionPoints: []string{rootCRLURL}},
		p.root, &p.interKey.PublicKey, p.rootKey); err != nil {
		return nil, err
	}
	ski := sha256.Sum256(elliptic.MarshalCompressed(elliptic.P256(), p.pckKey.X, p.pckKey.Y))
	if p.pck, err = mk(&x509.Certificate{Subject: intelName("Intel SGX PCK Certificate"), BasicConstraintsValid: true,
		SubjectKeyId: ski[:20], KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		CRLDistributionPoints: []string{pcs.PckCrlURL("platform")},
		ExtraExtensions:       []pkix.Extension{sgx}},
		p.inter, &p.pckKey.PublicKey, p.interKey); err != nil {
		return nil, err
	}
	if p.tcbSigning, err = mk(&x509.Certificate{Subject: intelName("Intel SGX TCB Signing"), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment},
		p.root, &p.tcbSigningKey.PublicKey, p.rootKey); err != nil {
		return nil, err
	}
	return p, nil
}

// sgxExtensionWithPPID copies the real PCK certificate's SGX extension
// (FMSPC, PCE ID, TCB) with the PPID replaced.
func sgxExtensionWithPPID(real *x509.Certificate, ppid byte) (pkix.Extension, error) {
	for _, e := range real.Extensions {
		if !e.Id.Equal(pcs.OidSgxExtension) {
			continue
		}
		var items []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &items); err != nil {
			return pkix.Extension{}, err
		}
		for i, it := range items {
			var head struct {
				ID   asn1.ObjectIdentifier
				Rest asn1.RawValue
			}
			if _, err := asn1.Unmarshal(it.FullBytes, &head); err == nil && head.ID.Equal(pcs.OidPPID) {
				b, err := asn1.Marshal(struct {
					ID    asn1.ObjectIdentifier
					Value []byte
				}{pcs.OidPPID, bytesOf(ppid, 16)})
				if err != nil {
					return pkix.Extension{}, err
				}
				items[i] = asn1.RawValue{FullBytes: b}
			}
		}
		v, err := asn1.Marshal(items)
		if err != nil {
			return pkix.Extension{}, err
		}
		return pkix.Extension{Id: pcs.OidSgxExtension, Value: v}, nil
	}
	return pkix.Extension{}, errors.New("teetest: the real PCK certificate has no SGX extension")
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// PPID returns the platform ID in the PCK certificate.
func (p *TDXPlatform) PPID() []byte { return bytesOf(p.Opts.PPID, 16) }

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// RootPEM returns the fake SGX root CA, for a policy's trusted_roots.
func (p *TDXPlatform) RootPEM() string { return string(pemOf(p.root)) }

// Policy returns reference values that accept this platform's TD.
func (p *TDXPlatform) Policy() *attest.TDXPolicy {
	return &attest.TDXPolicy{MRTDs: []string{hex.EncodeToString(p.Opts.MRTD)}, TrustedRoots: p.RootPEM()}
}

func sign(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

// Quote returns a signed version 4 quote for reportData.
func (p *TDXPlatform) Quote(rd [64]byte) ([]byte, error) {
	q := proto.Clone(p.template).(*pb.QuoteV4)
	body := q.GetTdQuoteBody()
	body.ReportData = rd[:]
	body.MrTd = append([]byte(nil), p.Opts.MRTD...)
	body.TeeTcbSvn = append([]byte(nil), p.Opts.TEETCBSVN...)
	body.MrConfigId = make([]byte, 48)
	copy(body.MrConfigId, p.Opts.MRConfigID)
	attrs := make([]byte, 8)
	if p.Opts.Debug {
		attrs[0] = 1
	}
	body.TdAttributes = attrs

	sd := q.GetSignedData()
	sd.EcdsaAttestationKey = append(p.attKey.X.FillBytes(make([]byte, 32)), p.attKey.Y.FillBytes(make([]byte, 32))...)
	qe := sd.GetCertificationData().GetQeReportCertificationData()
	h := sha256.Sum256(append(append([]byte(nil), sd.EcdsaAttestationKey...), qe.GetQeAuthData().GetData()...))
	qe.QeReport.ReportData = append(h[:], make([]byte, 32)...)
	qeRaw, err := abi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		return nil, err
	}
	if qe.QeReportSignature, err = sign(p.pckKey, qeRaw); err != nil {
		return nil, err
	}
	chain := pemOf(p.pck, p.inter, p.root)
	qe.PckCertificateChainData.PckCertChain = chain
	qe.PckCertificateChainData.Size = uint32(len(chain))
	// QE report, its signature, the auth data and the chain, with their headers.
	cdSize := 384 + 64 + 2 + len(qe.GetQeAuthData().GetData()) + 6 + len(chain)
	sd.CertificationData.Size = uint32(cdSize)
	q.SignedDataSize = uint32(64 + 64 + 6 + cdSize)
	q.ExtraBytes = nil

	hdr, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return nil, err
	}
	bodyRaw, err := abi.TdQuoteBodyToAbiBytes(body)
	if err != nil {
		return nil, err
	}
	if sd.Signature, err = sign(p.attKey, append(hdr, bodyRaw...)); err != nil {
		return nil, err
	}
	return abi.QuoteToAbiBytes(q)
}

// TSM returns a fake configfs-tsm whose report provider is this platform.
func (p *TDXPlatform) TSM() configfsi.Client {
	return fakeTSM("tdx_guest", func(inblob []byte) ([]byte, []byte, error) {
		var rd [64]byte
		copy(rd[:], inblob)
		q, err := p.Quote(rd)
		return q, nil, err
	})
}

// resign re-issues one of go-tdx-guest's sample PCS responses (TCB info or
// QE identity) with new dates, every TCB level rated UpToDate from SVN 0
// up, signed by the fake TCB signing key.
func (p *TDXPlatform) resign(sample []byte, field string, now time.Time) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(sample, &doc); err != nil {
		return nil, err
	}
	var inner map[string]any
	if err := json.Unmarshal(doc[field], &inner); err != nil {
		return nil, err
	}
	inner["issueDate"] = now.Add(-time.Hour).UTC().Format(time.RFC3339)
	inner["nextUpdate"] = now.Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if field == "tcbInfo" {
		inner["fmspc"] = p.fmspc
		delete(inner, "tdxModuleIdentities")
	}
	levels, _ := inner["tcbLevels"].([]any)
	for _, l := range levels {
		lv := l.(map[string]any)
		lv["tcbStatus"] = "UpToDate"
		tcb := lv["tcb"].(map[string]any)
		for _, k := range []string{"sgxtcbcomponents", "tdxtcbcomponents"} {
			if comps, ok := tcb[k].([]any); ok {
				for _, c := range comps {
					c.(map[string]any)["svn"] = 0
				}
			}
		}
		if _, ok := tcb["pcesvn"]; ok {
			tcb["pcesvn"] = 0
		}
		if _, ok := tcb["isvsvn"]; ok {
			tcb["isvsvn"] = 0
		}
	}
	raw, err := json.Marshal(inner)
	if err != nil {
		return nil, err
	}
	sig, err := sign(p.tcbSigningKey, raw)
	if err != nil {
		return nil, err
	}
	return []byte(fmt.Sprintf(`{"%s":%s,"signature":"%s"}`, field, raw, hex.EncodeToString(sig))), nil
}

// Collateral returns what Intel's PCS would serve for this platform, valid
// from now for 30 days: TCB info, QE identity, the PCK CRL (revoking the
// PCK certificate when revokePCK is set) and the root CA CRL.
func (p *TDXPlatform) Collateral(now time.Time, revokePCK bool) (map[string]collateral.Response, error) {
	tcbInfo, err := p.resign(tdxtestdata.TcbInfoBody, "tcbInfo", now)
	if err != nil {
		return nil, err
	}
	qeID, err := p.resign(tdxtestdata.QeIdentityBody, "enclaveIdentity", now)
	if err != nil {
		return nil, err
	}
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked *x509.Certificate) ([]byte, error) {
		l := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(30 * 24 * time.Hour)}
		if revoked != nil {
			l.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: revoked.SerialNumber, RevocationTime: now.Add(-time.Minute)}}
		}
		return x509.CreateRevocationList(rand.Reader, l, issuer, key)
	}
	rootCRL, err := crl(p.root, p.rootKey, nil)
	if err != nil {
		return nil, err
	}
	var revoked *x509.Certificate
	if revokePCK {
		revoked = p.pck
	}
	pckCRL, err := crl(p.inter, p.interKey, revoked)
	if err != nil {
		return nil, err
	}
	chain := func(certs ...*x509.Certificate) []string { return []string{url.QueryEscape(string(pemOf(certs...)))} }
	m := map[string]collateral.Response{}
	add := func(u string, h map[string][]string, body []byte) {
		m[u] = collateral.Response{URL: u, Header: h, Body: body}
	}
	add(pcs.TcbInfoURL(p.fmspc), map[string][]string{"Tcb-Info-Issuer-Chain": chain(p.tcbSigning, p.root)}, tcbInfo)
	add(pcs.QeIdentityURL(), map[string][]string{"Sgx-Enclave-Identity-Issuer-Chain": chain(p.tcbSigning, p.root)}, qeID)
	add(pcs.PckCrlURL("platform"), map[string][]string{"Sgx-Pck-Crl-Issuer-Chain": chain(p.inter, p.root)}, pckCRL)
	add(rootCRLURL, nil, rootCRL)
	return m, nil
}
